"""Firmware versions a node reports: DMI (BIOS, board, product), the BMC (`ipmitool mc info`)
and each NIC (`ethtool -i IF`). One parser per tool output; readers go through the Host."""

from __future__ import annotations

DMI = "/sys/class/dmi/id"
BIOS_FIELDS = ("bios_version", "bios_date", "bios_vendor")
PLATFORM_FIELDS = ("product_name", "board_vendor", "board_name", "board_version")
NET = "/sys/class/net"
IPMI_ARGV = ("ipmitool", "mc", "info")
TOOL_TIMEOUT_S = 5.0


def dmi(sys, fields: tuple[str, ...]) -> dict[str, str]:
    """{field: value} of the DMI fields the kernel exposes (absent or empty ones left out)."""
    out = {}
    for name in fields:
        value = sys.read_value(f"{DMI}/{name}")
        if value:
            out[name] = value
    return out


def parse_colon_fields(text: str) -> dict[str, str]:
    """`Key : value` / `key: value` lines (ipmitool mc info, ethtool -i) -> {key: value}; the
    first occurrence of a key wins, lines without a colon (continuations) are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and key not in out and not line[:1].isspace():
            out[key] = value.strip()
    return out


def bmc_firmware(runner) -> tuple[str | None, str]:
    """-> (the BMC's "Firmware Revision", "") or (None, why not)."""
    result = runner.run(list(IPMI_ARGV), timeout=TOOL_TIMEOUT_S)
    if result.error:
        return None, result.error
    if result.timed_out:
        return None, f"ipmitool mc info did not answer within {TOOL_TIMEOUT_S:.0f}s"
    fw = parse_colon_fields(result.stdout).get("Firmware Revision")
    if result.rc != 0 or not fw:
        said = (result.stderr or result.stdout).strip().splitlines()[:1]
        return None, f"ipmitool mc info exited {result.rc} without a firmware revision " \
                     f"({said[0][:120] if said else 'no output'})"
    return fw, ""


def physical_nics(sys) -> list[str]:
    """Network interfaces backed by a device (a `device` link): no lo, bridges, veths or bonds."""
    return sorted(n for n in sys.listdir(NET) or [] if sys.exists(f"{NET}/{n}/device"))


def nic_firmware(runner, nic: str) -> tuple[str | None, str]:
    """-> (ethtool -i's firmware-version, "") or (None, why not); "N/A" and empty mean none."""
    result = runner.run(["ethtool", "-i", nic], timeout=TOOL_TIMEOUT_S)
    if result.error:
        return None, result.error
    if result.timed_out:
        return None, f"ethtool -i {nic} did not answer within {TOOL_TIMEOUT_S:.0f}s"
    fw = parse_colon_fields(result.stdout).get("firmware-version", "")
    if result.rc != 0 or fw in ("", "N/A"):
        return None, f"ethtool -i {nic}: no firmware version (exit {result.rc})"
    return fw, ""
