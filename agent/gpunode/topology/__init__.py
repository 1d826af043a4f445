"""What each figure of this host should be, derived from its live links (`gpunode expect`)."""
