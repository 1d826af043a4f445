"""A kernel module loaded now and at every boot: `{kind: module, key: nvidia_peermem, target: loaded}`
writes /etc/modules-load.d/gpunode-nvidia_peermem.conf and runs `modprobe nvidia_peermem`;
rollback restores the file byte-exact and unloads a module that gpunode loaded (`modprobe -r`,
best effort: a module in use stays).

Two subjects: the module now (/proc/modules) and at boot (a modules-load.d file that lists it).
Apply writes only the boot file, so the audit verifies that one; the module itself is loaded by
the post command on a live host. Some modules have preconditions of their own (PRECONDITIONS):
nvidia_peermem is only wanted where NCCL cannot use DMA-BUF instead (the net.peermem rule).
"""

from __future__ import annotations

from gpunode.host.facts.modules import (
    MODULE_NAME,
    PEERMEM_MODULES,
    boot_listing,
    canonical,
    dmabuf_reason,
    installed,
    kernel_release,
    loaded_modules,
)
from gpunode.tune.kinds.base import Observed, SettingKind
from gpunode.tune.kinds.values import SettingInvalid

LOADED, NOT_LOADED = "loaded", "not loaded"
HEADER = "# Written by `gpunode apply`; `gpunode rollback` restores the previous state.\n"


def conf_path(name: str) -> str:
    return f"/etc/modules-load.d/gpunode-{canonical(name)}.conf"


def _peermem(host) -> str | None:
    modules = loaded_modules(host)
    if "nvidia" not in modules:
        return "the NVIDIA driver is not loaded"
    if not host.sys.listdir("/sys/class/infiniband"):
        return "no RDMA NIC (/sys/class/infiniband is empty): GPUDirect RDMA has nothing to talk to"
    if "nv_peer_mem" in modules:
        return "nv_peer_mem (Mellanox's older module) is loaded and does the same"
    dmabuf = dmabuf_reason(host)
    return f"{dmabuf}: NCCL registers GPU memory without nvidia_peermem" if dmabuf else None


PRECONDITIONS = {PEERMEM_MODULES[0]: _peermem}


class Module(SettingKind):
    name = "module"
    area = "host"

    def validate_key(self, key: str) -> None:
        if not MODULE_NAME.fullmatch(key or ""):
            raise SettingInvalid(f"module name {key!r}: letters, digits, '_' and '-' only (at most 56)")

    def validate_target(self, key, target):
        if target != LOADED:
            raise SettingInvalid(f"module target must be '{LOADED}' (gpunode loads modules, never unloads them)")
        return LOADED

    def where(self, setting) -> str:
        return conf_path(setting.key)

    def precondition(self, ctx, setting) -> str | None:
        rule = PRECONDITIONS.get(canonical(setting.key))
        return rule(ctx.host) if rule else None

    def observe(self, ctx, setting) -> list[Observed]:
        name = canonical(setting.key)
        now = LOADED if name in {canonical(m) for m in loaded_modules(ctx.host)} else NOT_LOADED
        listed = boot_listing(ctx.host, name)
        return [Observed(name, now, note="/proc/modules"),
                Observed(conf_path(name), LOADED if listed else NOT_LOADED,
                         note=f"at boot: listed in {listed}" if listed else "at boot: in no modules-load.d file")]

    def satisfied(self, setting, obs) -> bool:
        return obs.value == LOADED

    def cannot_apply(self, ctx, setting, wrong) -> str | None:
        name = canonical(setting.key)
        if installed(ctx.host, name) is False:
            return f"{name} is not built for kernel {kernel_release(ctx.host)} (not in its modules.dep)"
        if all(o.subject == name for o in wrong):  # listed for boot but not loaded: a boot-time failure
            return (f"{name} is listed in {boot_listing(ctx.host, name)} but not loaded: see "
                    "`journalctl -b -u systemd-modules-load`, then `modprobe " + name + "`")
        return None

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        name = canonical(setting.key)
        loaded_before = any(o.subject == name and o.value == LOADED for o in self.observe(ctx, setting))
        change = files.write_text(
            setting.id, conf_path(name), HEADER + name + "\n", current_text=NOT_LOADED, after_text=LOADED,
            note="loaded now and at every boot", post=[["modprobe", name]])
        if change is None:
            return []
        # Rollback unloads only what gpunode loaded; best effort (a module in use stays loaded).
        change.extra["undo_post"] = [] if loaded_before else [["modprobe", "-r", name]]
        return [change]
