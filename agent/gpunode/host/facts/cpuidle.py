"""CPU idle states (cpuidle sysfs, Documentation/admin-guide/pm/cpuidle.rst): per CPU, each
state's name, exit latency (us) and whether it is disabled."""

from __future__ import annotations

import re
from dataclasses import dataclass

CPU = "/sys/devices/system/cpu"
DRIVER = f"{CPU}/cpuidle/current_driver"
_STATE = re.compile(r"state(\d{1,3})")
_CPU = re.compile(r"cpu(\d{1,5})")


@dataclass(frozen=True)
class IdleState:
    """One cpuidle state of one CPU."""

    cpu: int
    index: int
    name: str
    latency_us: int
    disabled: bool


def idle_states(sys) -> list[IdleState]:
    """Every CPU's idle states (unreadable fields leave the state out)."""
    out = []
    for cpu_dir in sys.listdir(CPU) or []:
        m = _CPU.fullmatch(cpu_dir)
        if not m:
            continue
        base = f"{CPU}/{cpu_dir}/cpuidle"
        for state_dir in sys.listdir(base) or []:
            s = _STATE.fullmatch(state_dir)
            if not s:
                continue
            name = sys.read_value(f"{base}/{state_dir}/name")
            latency = sys.read_int(f"{base}/{state_dir}/latency")
            disable = sys.read_int(f"{base}/{state_dir}/disable")
            if name is None or latency is None:
                continue
            out.append(IdleState(int(m.group(1)), int(s.group(1)), name, latency, bool(disable)))
    return sorted(out, key=lambda st: (st.cpu, st.index))


def deepest_enabled(states: list[IdleState]) -> dict[int, IdleState]:
    """{cpu: its enabled state with the longest exit latency}."""
    out: dict[int, IdleState] = {}
    for st in states:
        if not st.disabled and (st.cpu not in out or st.latency_us > out[st.cpu].latency_us):
            out[st.cpu] = st
    return out
