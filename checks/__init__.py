"""Every check: the hand-written ones by area (static_checks), plus one generic check per profile setting
(all_checks). "Catalogue" names the baselines catalogue (baselines/select.py) only."""

from __future__ import annotations

import importlib

from gpunode.audit.engine import Check

# Modules holding hand-written checks, in report order. Each declares checks with @check.
AREA_MODULES = ("host", "cpu", "cpu_power", "isolation", "memory", "kernel", "numa", "storage", "net", "nccl", "roce", "gpu", "pcie", "nvlink",
                "topology", "xid", "containers", "mps", "gds", "datapaths")
# The area modules that hold checks tagged `gate`: the gate imports only these (each module is a
# few ms of start-up before every job). tests/test_engine.py fails when another module gains one.
GATE_MODULES = ("storage", "net", "gpu", "pcie", "nvlink", "xid")


def static_checks(modules: tuple[str, ...] = AREA_MODULES) -> list[Check]:
    found: list[Check] = []
    seen: set[str] = set()
    for name in modules:
        module = importlib.import_module(f"gpunode.checks.{name}")  # every area module ships
        for value in vars(module).values():
            if isinstance(value, Check):
                if value.id in seen:
                    raise ValueError(f"duplicate check id {value.id} in gpunode.checks.{name}")
                seen.add(value.id)
                found.append(value)
    return found


def all_checks(profile, modules: tuple[str, ...] = AREA_MODULES) -> list[Check]:
    from gpunode.checks.settings import setting_checks

    return static_checks(modules) + setting_checks(profile)
