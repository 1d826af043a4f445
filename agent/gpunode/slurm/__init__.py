"""Slurm: the pre-job gate, scontrol, hook install and the gate's fast start-up path."""
