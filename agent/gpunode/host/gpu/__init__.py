"""GPU facts: the data model, the live NVML source and the replay source."""
