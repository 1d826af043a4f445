"""Parsers of host facts that several checks share: mounts, meminfo, limits, df, NICs, InfiniBand.

Each module reads through the Host (SysRoot or Runner) and returns plain dataclasses, so the
checks stay short and the parsers are tested on real recorded outputs.
"""
