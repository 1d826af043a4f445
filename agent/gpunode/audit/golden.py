"""Golden config drift: a YAML of pinned versions and facts, and one check per pinned fact.

    schema: gpunode.golden/1
    severity: warning                 # of each difference: warning (WARN) or critical (FAIL)
    driver_version: "580.159.04"      # every pin: a value, or a list of allowed values
    cuda_driver_version: "13.0"
    vbios: "96.00.DA.00.0C"           # each GPU's VBIOS
    kernel_release: "6.1.0-28-amd64"
    os: {pretty_name: "Debian GNU/Linux 12 (bookworm)", version_id: "12"}
    nccl_version: "2.28.9"            # every NCCL found (library file name, nccl.h, pip wheel)
    fabric_manager_version: "580.159.04"
    gpu_count: 8
    nic_firmware: {mlx5_0: "28.39.1002"}   # /sys/class/infiniband/<dev>/fw_ver
    eth_firmware: {eth0: "28.39.1002 (MT_0000000838)"}   # every NIC's `ethtool -i` firmware-version
    bios: {bios_version: "2.1.1", bios_date: "03/14/2024"}   # DMI (/sys/class/dmi/id)
    platform: {product_name: "...", board_name: "..."}        # DMI product and board
    bmc_firmware: "3.44"              # `ipmitool mc info` Firmware Revision

`gpunode audit --golden FILE` adds the checks; `gpunode golden record -o FILE` writes one from
this host (or a snapshot). Every fact is read through the Host, by the same code for both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpunode.audit.engine import Check, bad, error, ok
from gpunode.host.facts import firmware
from gpunode.host.facts.os_release import OS_RELEASE, parse_os_release
from gpunode.host.gpu.source import NVML_TIMEOUT_S
from gpunode.inputs import InputError, load_yaml, unknown_keys

SCHEMA = "gpunode.golden/1"
FM_TIMEOUT_S = 15.0
FM_ARGV = ("nv-fabricmanager", "--version")  # the binary of the nvidia-fabricmanager package
_FM_VERSION = re.compile(r"Fabric Manager version is\s*:\s*(\S+)")
_LIB_VERSION = re.compile(r"^libnccl\.so\.(\d+\.\d+\.\d+)")
_WHEEL_VERSION = re.compile(r"^nvidia_nccl_cu\d+-(\d+\.\d+\.\d+)[^/]*\.dist-info")
_HEADER_DEFINE = re.compile(r"^#define\s+NCCL_(MAJOR|MINOR|PATCH)\s+(\d+)\s*$", re.MULTILINE)
# Where NCCL is installed: distribution packages, CUDA and NVIDIA tarball prefixes, pip wheels.
NCCL_LIBS = (
    "/usr/lib/x86_64-linux-gnu/libnccl.so.*",
    "/usr/lib/aarch64-linux-gnu/libnccl.so.*",
    "/usr/lib64/libnccl.so.*",
    "/usr/local/lib/libnccl.so.*",
    "/usr/local/cuda/lib64/libnccl.so.*",
    "/usr/local/nccl*/lib/libnccl.so.*",
    "/opt/nccl*/lib/libnccl.so.*",
)
NCCL_HEADERS = (
    "/usr/include/nccl.h",
    "/usr/local/include/nccl.h",
    "/usr/local/cuda/include/nccl.h",
    "/usr/local/nccl*/include/nccl.h",
    "/opt/nccl*/include/nccl.h",
)
NCCL_WHEELS = (
    "/usr/local/lib/python3*/dist-packages/nvidia_nccl_cu*.dist-info",
    "/usr/local/lib/python3*/site-packages/nvidia_nccl_cu*.dist-info",
    "/usr/lib/python3/dist-packages/nvidia_nccl_cu*.dist-info",
    "/usr/lib/python3*/site-packages/nvidia_nccl_cu*.dist-info",
    "/opt/conda/lib/python3*/site-packages/nvidia_nccl_cu*.dist-info",
)
IB_ROOT = "/sys/class/infiniband"
PINS = ("driver_version", "cuda_driver_version", "vbios", "kernel_release", "os", "nccl_version",
        "fabric_manager_version", "gpu_count", "nic_firmware", "eth_firmware", "bios", "platform", "bmc_firmware")
_KEYS = {"schema", "severity", "recorded", *PINS}
_DMI_PINS = {"bios": firmware.BIOS_FIELDS, "platform": firmware.PLATFORM_FIELDS}  # pin -> its DMI fields
_OS_KEYS = {"pretty_name", "version_id"}


# ---------------------------------------------------------------- reading facts (Host only)


def nccl_installs(sys) -> list[tuple[str, str]]:
    """(where, version) of every NCCL found, from file names and nccl.h; never by loading it."""
    found: list[tuple[str, str]] = []
    for pattern in NCCL_LIBS:
        for path in sys.glob(pattern):
            m = _LIB_VERSION.fullmatch(Path(path).name)
            if m:
                found.append((path, m.group(1)))
    for pattern in NCCL_HEADERS:
        for path in sys.glob(pattern):
            version = header_version(sys.read(path) or "")
            if version:
                found.append((path, version))
    for pattern in NCCL_WHEELS:
        for path in sys.glob(pattern):
            m = _WHEEL_VERSION.fullmatch(Path(path).name)
            if m:
                found.append((path, m.group(1)))
    return found


def header_version(text: str) -> str | None:
    """nccl.h's #define NCCL_MAJOR/MINOR/PATCH -> "2.28.9"."""
    parts = dict(_HEADER_DEFINE.findall(text))
    if not {"MAJOR", "MINOR", "PATCH"} <= set(parts):
        return None
    return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}"


def fabric_manager_version(runner) -> tuple[str | None, str]:
    """-> (version, "") or (None, why not)."""
    result = runner.run(list(FM_ARGV), timeout=FM_TIMEOUT_S)
    if result.error:
        return None, result.error
    if result.timed_out:
        return None, f"{FM_ARGV[0]} --version did not answer within {FM_TIMEOUT_S:.0f}s"
    m = _FM_VERSION.search(result.stdout + "\n" + result.stderr)
    if m:
        return m.group(1), ""
    first = (result.stdout or result.stderr).strip().splitlines()[:1]
    return None, f"{FM_ARGV[0]} --version exited {result.rc} without a version ({first[0][:120] if first else 'no output'})"


def os_release(sys) -> dict[str, str | None]:
    text = next((t for t in (sys.read(p) for p in OS_RELEASE) if t is not None), None)
    fields = parse_os_release(text) if text is not None else {}
    return {"pretty_name": fields.get("PRETTY_NAME"), "version_id": fields.get("VERSION_ID")}


def nic_firmware(sys) -> dict[str, str]:
    out = {}
    for device in sys.listdir(IB_ROOT) or []:
        fw = sys.read_value(f"{IB_ROOT}/{device}/fw_ver")
        if fw:
            out[device] = fw
    return out


def eth_firmware(host) -> tuple[dict[str, str], list[str]]:
    """{nic: ethtool -i firmware-version} of every NIC with a device, and why others have none."""
    found, whys = {}, []
    for nic in firmware.physical_nics(host.sys):
        fw, why = firmware.nic_firmware(host.runner, nic)
        if fw:
            found[nic] = fw
        else:
            whys.append(why)
    return found, whys


def collect(host) -> tuple[dict, list[str]]:
    """This host's facts as a golden mapping, and notes on what could not be read (left out)."""
    facts, notes = _gpu_facts(host)
    for key, read in _HOST_FACTS:  # in this order: the commands run one after the other
        value, why = read(host)
        if value:
            facts[key] = value
        else:
            notes.append(f"{key} left out: {why}")
    return {k: v for k, v in facts.items() if v is not None}, notes


def _gpu_facts(host) -> tuple[dict[str, Any], list[str]]:
    """Driver, CUDA driver, VBIOS and GPU count from the inventory, or a note why not."""
    try:
        inv = host.gpu.inventory(timeout=NVML_TIMEOUT_S)
    except TimeoutError as exc:
        return {}, [f"GPU facts left out: {exc}"]
    if inv is None:
        return {}, []
    if not inv.available:
        return {}, [f"GPU facts left out: {inv.error or 'NVML unavailable'}"]
    facts: dict[str, Any] = {"driver_version": inv.driver_version, "cuda_driver_version": inv.cuda_driver_version}
    vbios = sorted({g.vbios_version for g in inv.gpus if g.vbios_version})
    if vbios:
        facts["vbios"] = _one_or_list(vbios)
    facts["gpu_count"] = len(inv.gpus)
    return facts, []


# Each host fact: host -> (value, why it is left out when the value is empty).
def _kernel_fact(host):
    return host.sys.read_value("/proc/sys/kernel/osrelease"), "/proc/sys/kernel/osrelease unreadable"


def _os_fact(host):
    return {k: v for k, v in os_release(host.sys).items() if v}, "no readable os-release"


def _nccl_fact(host):
    versions = sorted({v for _, v in nccl_installs(host.sys)})
    return (_one_or_list(versions) if versions else None), "no NCCL library, nccl.h or NCCL wheel found"


def _nic_fact(host):
    return nic_firmware(host.sys), f"no {IB_ROOT}/*/fw_ver"


def _dmi_fact(pin: str):
    fields = _DMI_PINS[pin]
    return lambda host: (firmware.dmi(host.sys, fields), f"no readable {firmware.DMI}/{{{','.join(fields)}}}")


def _eth_fact(host):
    eth, whys = eth_firmware(host)
    return eth, "; ".join(whys[:3]) or "no NIC with a device"


_HOST_FACTS = (
    ("kernel_release", _kernel_fact),
    ("os", _os_fact),
    ("nccl_version", _nccl_fact),
    ("fabric_manager_version", lambda host: fabric_manager_version(host.runner)),
    ("nic_firmware", _nic_fact),
    ("bios", _dmi_fact("bios")),
    ("platform", _dmi_fact("platform")),
    ("bmc_firmware", lambda host: firmware.bmc_firmware(host.runner)),
    ("eth_firmware", _eth_fact),
)


def _one_or_list(values: list[str]):
    return values[0] if len(values) == 1 else values


# ---------------------------------------------------------------- the golden file


@dataclass(frozen=True)
class Golden:
    path: Path
    severity: str
    pins: dict[str, Any]  # key -> tuple of allowed values / int / {os key: tuple} / {device: tuple}


def load_golden(path: str | Path) -> Golden:
    """Read and validate; InputError (a ValueError) naming the file and key on anything wrong."""
    path = Path(path)
    data = load_yaml(path)  # regular files only; duplicate keys, alias bombs, depth refused
    severity = _golden_severity(path, data)
    pins = {key: _PIN_READERS.get(key, _allowed)(path, key, data[key]) for key in PINS if data.get(key) is not None}
    if not pins:
        raise InputError(f"{path}: pins nothing; give at least one of {', '.join(PINS)}")
    return Golden(path, severity, pins)


def _golden_severity(path: Path, data: Any) -> str:
    """The file's severity, once its shape, keys and schema are known good."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: a golden file must be a mapping of pinned facts")
    if set(data) - _KEYS:
        raise InputError(f"{path}: {unknown_keys(data, _KEYS)}")  # never echoes a foreign file
    if "schema" in data and data["schema"] != SCHEMA:
        raise InputError(f"{path}: schema: {data['schema']!r} is not {SCHEMA!r}")
    severity = data.get("severity", "warning")
    if severity not in ("warning", "critical"):
        raise InputError(f"{path}: severity: {severity!r}: warning or critical")
    return severity


# Each pin that is not a plain version (or list of them): (path, key, value) -> its pinned form.
def _count_pin(path: Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{path}: {key}: must be a whole number (got {value!r})")
    return value


def _os_pin(path: Path, key: str, value: Any) -> dict:
    if not isinstance(value, dict) or not value or set(value) - _OS_KEYS:
        raise InputError(f"{path}: {key}: a mapping with pretty_name and/or version_id")
    return {k: _allowed(path, f"{key}.{k}", v) for k, v in value.items()}


def _device_pin(path: Path, key: str, value: Any) -> dict:
    if not isinstance(value, dict) or not value:
        raise InputError(f"{path}: {key}: a mapping of device (mlx5_0, eth0) to firmware version")
    return {str(k): _allowed(path, f"{key}.{k}", v) for k, v in value.items()}


def _dmi_pin(path: Path, key: str, value: Any) -> dict:
    if not isinstance(value, dict) or not value or set(value) - set(_DMI_PINS[key]):
        raise InputError(f"{path}: {key}: a mapping with some of {', '.join(_DMI_PINS[key])}")
    return {k: _allowed(path, f"{key}.{k}", v) for k, v in value.items()}


def _allowed(path: Path, key: str, value: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        raise InputError(f"{path}: {key}: must be a version string or a list of them (got {value!r})")
    return tuple(str(v).strip() for v in values)


def _show(allowed: tuple[str, ...]) -> str:
    return " or ".join(allowed)


_PIN_READERS = {"gpu_count": _count_pin, "os": _os_pin, "nic_firmware": _device_pin, "eth_firmware": _device_pin,
                "bios": _dmi_pin, "platform": _dmi_pin}  # every other pin: _allowed


# ---------------------------------------------------------------- the checks


def golden_checks(path: str | Path) -> list[Check]:
    """One check per pinned fact of the golden file (id golden.<fact>)."""
    golden = load_golden(path)
    name = golden.path.name
    makers = {
        "driver_version": _driver, "cuda_driver_version": _cuda, "vbios": _vbios, "kernel_release": _kernel,
        "os": _os, "nccl_version": _nccl, "fabric_manager_version": _fabric_manager, "gpu_count": _gpu_count,
        "nic_firmware": _nic_firmware, "eth_firmware": _eth_firmware, "bios": _dmi("bios"),
        "platform": _dmi("platform"), "bmc_firmware": _bmc,
    }
    titles = {
        "driver_version": "NVIDIA driver version", "cuda_driver_version": "CUDA driver API version",
        "vbios": "GPU VBIOS version", "kernel_release": "Kernel release", "os": "OS release",
        "nccl_version": "NCCL version", "fabric_manager_version": "Fabric Manager version",
        "gpu_count": "GPU count", "nic_firmware": "NIC firmware version",
        "eth_firmware": "NIC firmware (ethtool -i)", "bios": "BIOS version (DMI)",
        "platform": "Product and board (DMI)", "bmc_firmware": "BMC firmware (ipmitool mc info)",
    }
    checks = []
    for key, pinned in golden.pins.items():
        checks.append(Check(
            id=f"golden.{key}",
            title=f"{titles[key]} as in {name}",
            area="golden",
            func=makers[key](pinned),
            severity=golden.severity,
            tags=frozenset({"golden"}),
            remediation=f"Bring this host to the golden config ({golden.path}) or, if the change is intended, "
                        f"record a new one with `gpunode golden record`.",
            cost="slow" if key in ("fabric_manager_version", "bmc_firmware", "eth_firmware") else "fast",
        ))
    return checks


def _inventory(ctx):
    """The inventory, or None with why (no driver counts as a difference from a pinned fact)."""
    try:
        inv = ctx.inventory()
    except TimeoutError as exc:
        return None, str(exc)
    if not inv.available:
        return None, inv.error or "NVML unavailable"
    return inv, ""


def _compare(what: str, observed: str | None, allowed: tuple[str, ...], subject=None):
    if observed is not None and observed.strip() in allowed:
        return ok(f"{what} {observed}", observed=observed, expected=_show(allowed), subject=subject)
    shown = observed if observed is not None else "unknown"
    return bad(f"{what} {shown}, golden {_show(allowed)}", observed=observed, expected=_show(allowed), subject=subject)


def _inventory_version(what: str, read):
    """A golden check of one inventory-wide version (driver, CUDA driver)."""
    def make(allowed):
        def run(ctx):
            inv, why = _inventory(ctx)
            if inv is None:
                return bad(f"{what} version unknown ({why}), golden {_show(allowed)}", expected=_show(allowed))
            return _compare(what, read(inv), allowed)
        return run
    return make


_driver = _inventory_version("driver", lambda inv: inv.driver_version)
_cuda = _inventory_version("CUDA driver", lambda inv: inv.cuda_driver_version)


def _vbios(allowed):
    def run(ctx):
        inv, why = _inventory(ctx)
        if inv is None:
            return bad(f"VBIOS unknown ({why}), golden {_show(allowed)}", expected=_show(allowed))
        if not inv.gpus:
            return bad(f"no GPU found, golden VBIOS {_show(allowed)}", expected=_show(allowed))
        out = []
        for g in inv.gpus:
            if g.error or "vbios_version" in g.field_errors:
                out.append(error(f"VBIOS unreadable: {g.error or g.field_errors['vbios_version']}", subject=g.label))
            else:
                out.append(_compare("VBIOS", g.vbios_version, allowed, subject=g.label))
        return out
    return run


def _gpu_count(pinned: int):
    def run(ctx):
        inv, why = _inventory(ctx)
        if inv is None:
            if pinned == 0:
                return ok(f"no GPU ({why})", observed=0, expected=0)
            return bad(f"no GPU visible ({why}), golden {pinned}", observed=0, expected=pinned)
        count = len(inv.gpus)
        if count == pinned:
            return ok(f"{count} GPU(s)", observed=count, expected=pinned)
        return bad(f"{count} GPU(s), golden {pinned}", observed=count, expected=pinned)
    return run


def _kernel(allowed):
    def run(ctx):
        return _compare("kernel", ctx.host.sys.read_value("/proc/sys/kernel/osrelease"), allowed)
    return run


def _os(pinned: dict):
    def run(ctx):
        observed = os_release(ctx.host.sys)
        diffs = [f"{k} {observed.get(k) or 'unknown'!r} (golden {_show(v)})"
                 for k, v in pinned.items() if (observed.get(k) or "").strip() not in v]
        shown = observed.get("pretty_name") or observed.get("version_id") or "unknown OS"
        expected = {k: _show(v) for k, v in pinned.items()}
        if diffs:
            return bad("OS differs: " + "; ".join(diffs), observed=observed, expected=expected)
        return ok(shown, observed=observed, expected=expected)
    return run


def _nccl(allowed):
    def run(ctx):
        found = nccl_installs(ctx.host.sys)
        if not found:
            return bad(f"no NCCL found (library file names, nccl.h, pip wheels), golden {_show(allowed)}",
                       expected=_show(allowed))
        out = [_compare("NCCL", version, allowed, subject=where) for where, version in found]
        return out
    return run


def _fabric_manager(allowed):
    def run(ctx):
        version, why = fabric_manager_version(ctx.host.runner)
        if version is None:
            return bad(f"Fabric Manager version unknown ({why}), golden {_show(allowed)}", expected=_show(allowed))
        return _compare("Fabric Manager", version, allowed)
    return run


def _nic_firmware(pinned: dict):
    def run(ctx):
        observed = nic_firmware(ctx.host.sys)
        out = []
        for device, allowed in pinned.items():
            if device not in observed:
                out.append(bad(f"{device} absent (no {IB_ROOT}/{device}/fw_ver), golden firmware {_show(allowed)}",
                               expected=_show(allowed), subject=device))
            else:
                out.append(_compare("firmware", observed[device], allowed, subject=device))
        for device in sorted(set(observed) - set(pinned)):
            out.append(bad(f"firmware {observed[device]}: this NIC is not in the golden file", observed=observed[device],
                           subject=device))
        return out
    return run


def _eth_firmware(pinned: dict):
    def run(ctx):
        out = []
        nics = firmware.physical_nics(ctx.host.sys)
        for nic, allowed in pinned.items():
            if nic not in nics:
                out.append(bad(f"{nic} absent (no {firmware.NET}/{nic}/device), golden firmware {_show(allowed)}",
                               expected=_show(allowed), subject=nic))
                continue
            fw, why = firmware.nic_firmware(ctx.host.runner, nic)
            out.append(_compare("firmware", fw, allowed, subject=nic) if fw else
                       bad(f"firmware unknown ({why}), golden {_show(allowed)}", expected=_show(allowed), subject=nic))
        return out
    return run


def _dmi(pin: str):
    def make(pinned: dict):
        def run(ctx):
            observed = firmware.dmi(ctx.host.sys, _DMI_PINS[pin])
            diffs = [f"{k} {observed.get(k) or 'unknown'!r} (golden {_show(v)})"
                     for k, v in pinned.items() if (observed.get(k) or "").strip() not in v]
            expected = {k: _show(v) for k, v in pinned.items()}
            if diffs:
                return bad(f"{pin} differs: " + "; ".join(diffs), observed=observed, expected=expected)
            return ok(", ".join(observed.get(k, "") for k in pinned), observed=observed, expected=expected)
        return run
    return make


def _bmc(allowed):
    def run(ctx):
        version, why = firmware.bmc_firmware(ctx.host.runner)
        if version is None:
            return bad(f"BMC firmware unknown ({why}), golden {_show(allowed)}", expected=_show(allowed))
        return _compare("BMC firmware", version, allowed)
    return run


# ---------------------------------------------------------------- writing one


def golden_yaml(facts: dict, host: str, time: str, source: str, severity: str = "warning") -> str:
    mapping = {"schema": SCHEMA, "recorded": {"host": host, "time": time, "source": source}, "severity": severity}
    mapping.update({k: facts[k] for k in PINS if k in facts})
    header = ("# gpunode golden config, written by `gpunode golden record`. Every pin may be a value or a list\n"
              "# of allowed values; remove the pins you do not want checked. Use: gpunode audit --golden FILE\n")
    return header + yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False, width=100)
