"""Which way this host takes kernel command line changes, as its distribution expects:

- Debian/Ubuntu GRUB: a drop-in under /etc/default/grub.d/ (sourced after /etc/default/grub by
  update-grub), then update-grub;
- RHEL/Rocky/Fedora with Boot Loader Specification entries (/boot/loader/entries): grubby,
  which updates every entry and the default for kernels installed later (there is no update-grub);
- anything else (no GRUB: direct kernel boot in a VM, systemd-boot without grubby): none, with why.
"""

from __future__ import annotations

from typing import NamedTuple

from gpunode.host.facts.os_release import OS_RELEASE, parse_os_release

GRUB_DEFAULT = "/etc/default/grub"
GRUB_DROPIN_DIR = "/etc/default/grub.d"
BLS_ENTRIES = "/boot/loader/entries"
GRUBBY = ("/usr/sbin/grubby", "/sbin/grubby", "/usr/bin/grubby")
UPDATE_GRUB = ("/usr/sbin/update-grub", "/sbin/update-grub")
_RHEL_LIKE = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn"}

DEBIAN_GRUB = "debian-grub"
BLS_GRUBBY = "bls-grubby"


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class BootLoader(NamedTuple):
    """How this distribution takes kernel parameters, or why gpunode cannot set them here."""

    style: str | None  # DEBIAN_GRUB, BLS_GRUBBY, or None
    why_not: str = ""  # when style is None
    grubby: str | None = None  # the grubby binary's path


def os_ids(host) -> set[str]:
    """ID and ID_LIKE of /etc/os-release (or /usr/lib/os-release), lower case."""
    for path in OS_RELEASE:
        text = host.sys.read(path)
        if text is not None:
            fields = parse_os_release(text)
            return {w.lower() for w in f"{fields.get('ID', '')} {fields.get('ID_LIKE', '')}".split()}
    return set()


def boot_loader(host) -> BootLoader:
    ids = os_ids(host)
    entries = [n for n in host.sys.listdir(BLS_ENTRIES) or [] if n.endswith(".conf")]
    grubby = next((p for p in GRUBBY if host.sys.exists(p)), None)
    if ids & _RHEL_LIKE or (entries and grubby):
        return _bls(entries, grubby)
    if host.sys.exists(GRUB_DEFAULT) or host.sys.exists(GRUB_DROPIN_DIR):
        return _debian_grub(host)
    return BootLoader(None, f"no boot loader configuration gpunode can change (no {GRUB_DEFAULT}, "
                            f"no entries in {BLS_ENTRIES}): the kernel may be booted directly (a VM)")


def _bls(entries: list[str], grubby: str | None) -> BootLoader:
    """A RHEL-like host (or BLS entries with grubby): grubby changes the entries, or nothing does."""
    if entries and grubby:
        return BootLoader(BLS_GRUBBY, grubby=grubby)
    missing = "no grubby" if entries else f"no boot entries in {BLS_ENTRIES}"
    return BootLoader(None, f"a RHEL-like host with {missing}: gpunode changes BLS entries only through grubby")


def _debian_grub(host) -> BootLoader:
    """/etc/default/grub (or its drop-ins) is there: usable when update-grub can apply it (a
    recorded host is judged as if it could)."""
    if any(host.sys.exists(p) for p in UPDATE_GRUB) or not host.sys.is_live:
        return BootLoader(DEBIAN_GRUB)
    return BootLoader(None, f"{GRUB_DEFAULT} exists but there is no update-grub to apply it")
