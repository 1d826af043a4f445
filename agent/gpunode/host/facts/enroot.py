"""enroot (NVIDIA's unprivileged container runtime, used by Slurm through pyxis): its
configuration (/etc/enroot/enroot.conf: `ENROOT_X value` lines), the fstab-like mounts it gives
every container (/etc/enroot/mounts.d/*.fstab) and its hooks; pyxis in Slurm's plugstack."""

from __future__ import annotations

ENROOT_CONF = "/etc/enroot/enroot.conf"
MOUNTS_D = "/etc/enroot/mounts.d"
HOOKS_D = "/etc/enroot/hooks.d"
NVIDIA_HOOK = f"{HOOKS_D}/98-nvidia.sh"
PLUGSTACK = "/etc/slurm/plugstack.conf"
PLUGSTACK_D = "/etc/slurm/plugstack.conf.d"
PYXIS_SO = "spank_pyxis.so"


def parse_enroot_conf(text: str) -> dict[str, str]:
    """`ENROOT_RUNTIME_PATH /run/enroot/user-$(id -u)` -> {key: value}; comments skipped."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key.startswith("ENROOT_"):
            out[key] = value.strip()
    return out


def mount_targets(text: str) -> list[str]:
    """The targets (second field) of an enroot fstab: `/dev/shm /dev/shm none x-create=dir,bind`."""
    out = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            out.append(fields[1])
    return out


def enroot_mounts(sys) -> list[str]:
    return [t for n in sorted(sys.listdir(MOUNTS_D) or []) if n.endswith(".fstab")
            for t in mount_targets(sys.read(f"{MOUNTS_D}/{n}") or "")]


def pyxis_lines(sys) -> list[str]:
    """Files of Slurm's plugstack (the main file and plugstack.conf.d/*.conf) naming pyxis."""
    files = [PLUGSTACK] + [f"{PLUGSTACK_D}/{n}" for n in sorted(sys.listdir(PLUGSTACK_D) or []) if n.endswith(".conf")]
    found = []
    for path in files:
        for line in (sys.read(path) or "").splitlines():
            line = line.split("#", 1)[0].strip()
            if PYXIS_SO in line and line.split()[:1] in (["required"], ["optional"]):
                found.append(path)
    return found
