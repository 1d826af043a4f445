"""Containers jobs run in: the NVIDIA Container Toolkit, its runtime or CDI configuration per
engine (Docker, containerd, CRI-O, Podman), Docker's daemon.json, enroot and pyxis under Slurm.
Docker's default /dev/shm and memlock are profile settings (json kind, training profile)."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, ok, skip
from gpunode.host.facts import container_toolkit as ctk
from gpunode.host.facts import docker, enroot
from gpunode.inputs import InputError

CTK_TIMEOUT_S = 5.0
# NVIDIA security bulletin (July 2025): CVE-2025-23266, container escape through the toolkit's
# createContainer hook, fixed in NVIDIA Container Toolkit 1.17.8.
CTK_MIN_SAFE = "1.17.8"
CONTAINERD_TOML = "/etc/containerd/config.toml"
CRIO_CONF = ("/etc/crio/crio.conf", "/etc/crio/crio.conf.d")
PODMAN = ("/usr/bin/podman", "/usr/local/bin/podman")


def _docker_installed(sys) -> bool:
    return any(sys.exists(p) for p in docker.DOCKERD)


def _daemon_json(sys) -> tuple[dict | None, str]:
    text = sys.read(docker.DAEMON_JSON)
    if text is None:
        return {}, ""
    try:
        return docker.parse_daemon_json(text), ""
    except InputError as exc:
        return None, str(exc)


@check("containers.toolkit", f"NVIDIA Container Toolkit installed and at least {CTK_MIN_SAFE}", area="containers",
       remediation="Upgrade nvidia-container-toolkit (NVIDIA security bulletin, July 2025: CVE-2025-23266 fixed in "
                   f"{CTK_MIN_SAFE}); GPU containers need it under Docker, containerd, CRI-O and Podman.")
def toolkit(ctx: AuditContext):
    result = ctx.host.runner.run(list(ctk.CTK_ARGV), timeout=CTK_TIMEOUT_S)
    if result.error:
        raise CheckSkipped(f"nvidia-ctk not installed ({result.error})")
    if result.timed_out:
        return error(f"nvidia-ctk --version gave no answer within {CTK_TIMEOUT_S:.0f}s")
    version = ctk.parse_ctk_version(result.stdout + "\n" + result.stderr)
    if version is None:
        return error(f"nvidia-ctk --version exited {result.rc} without a version")
    if ctk.version_tuple(version) < ctk.version_tuple(CTK_MIN_SAFE):
        return bad(f"NVIDIA Container Toolkit {version}: below {CTK_MIN_SAFE} (CVE-2025-23266)", observed=version,
                   expected=f">= {CTK_MIN_SAFE}")
    return ok(f"NVIDIA Container Toolkit {version}", observed=version, expected=f">= {CTK_MIN_SAFE}")


def _engines(ctx) -> dict[str, str]:
    """{engine: how GPUs reach its containers, or "" for none} for each engine installed."""
    sys = ctx.host.sys
    has_cdi = bool(_nvidia_specs(sys))
    out: dict[str, str] = {}
    if _docker_installed(sys):
        out["docker"] = _docker_gpus(sys, has_cdi)
    toml = sys.read(CONTAINERD_TOML)
    if toml is not None:
        out["containerd"] = "runtime nvidia in config.toml" if ("runtimes.nvidia]" in toml
                                                                 or 'runtimes."nvidia"]' in toml) else ""
    crio = _crio_gpus(sys)
    if crio is not None:
        out["cri-o"] = crio
    if any(sys.exists(p) for p in PODMAN):
        out["podman"] = "CDI" if has_cdi else ""
    return out


def _crio_gpus(sys) -> str | None:
    """How CRI-O gives GPUs to containers (crio.conf and its drop-ins), "" for not at all, None
    when CRI-O has no config here."""
    crio = [sys.read(CRIO_CONF[0]) or ""] + [sys.read(f"{CRIO_CONF[1]}/{n}") or ""
                                             for n in sorted(sys.listdir(CRIO_CONF[1]) or [])]
    if not (sys.exists(CRIO_CONF[0]) or sys.listdir(CRIO_CONF[1])):
        return None
    return "runtime nvidia in crio.conf" if any("crio.runtime.runtimes.nvidia]" in t for t in crio) else ""


def _docker_gpus(sys, has_cdi: bool) -> str:
    """How dockerd gives GPUs to containers (daemon.json), or "" for not at all."""
    cfg, _ = _daemon_json(sys)
    runtimes = (cfg or {}).get("runtimes")
    features = (cfg or {}).get("features")
    if isinstance(runtimes, dict) and "nvidia" in runtimes:
        return "runtime nvidia in daemon.json"
    if isinstance(features, dict) and features.get("cdi") is True and has_cdi:
        return "CDI (features.cdi)"
    return ""


@check("containers.runtime", "Every container engine installed can give GPUs to containers", area="containers",
       remediation="nvidia-ctk runtime configure --runtime=docker|containerd|crio (then restart the engine), or "
                   "generate a CDI spec for Podman: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml "
                   "(NVIDIA Container Toolkit install guide).")
def runtime(ctx: AuditContext):
    engines = _engines(ctx)
    if not engines:
        return skip("no container engine installed (dockerd, containerd config, CRI-O config, podman)")
    missing = sorted(e for e, how in engines.items() if not how)
    shown = "; ".join(f"{e}: {how or 'no NVIDIA runtime or CDI'}" for e, how in engines.items())
    if missing:
        return bad(shown, observed=engines, expected="nvidia runtime or CDI per engine")
    return ok(shown, observed=engines)


def _nvidia_specs(sys) -> list[tuple[str, set[str], str]]:
    """(path, driver versions, why unreadable) of each CDI spec of kind nvidia.com/gpu."""
    out: list[tuple[str, set[str], str]] = []
    for path in ctk.cdi_spec_files(sys):
        text = sys.read(path)
        if text is None:
            continue
        try:
            kind, versions = ctk.parse_cdi_spec(text, path)
        except InputError as exc:
            if "nvidia" in path:
                out.append((path, set(), str(exc)))
            continue
        if kind == ctk.NVIDIA_KIND:
            out.append((path, versions, ""))
    return out


@check("containers.cdi", "The NVIDIA CDI spec matches the installed driver", area="containers",
       remediation="Regenerate after every driver change: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml "
                   "(or enable nvidia-cdi-refresh.service of toolkit 1.18+); a stale spec mounts libraries "
                   "that no longer exist and containers fail to start.")
def cdi(ctx: AuditContext):
    specs = _nvidia_specs(ctx.host.sys)
    if not specs:
        return skip(f"no CDI spec of kind {ctk.NVIDIA_KIND} in {', '.join(ctk.CDI_DIRS)}")
    ctx.gpus()  # SKIPs without a driver: nothing to compare with
    inv = ctx.inventory()
    findings = []
    for path, versions, why in specs:
        if why:
            findings.append(bad(f"unreadable: {why}", subject=path))
        elif not versions:
            findings.append(bad("names no driver library (libcuda.so.VERSION): not generated for a driver",
                                subject=path, expected=inv.driver_version))
        elif versions != {inv.driver_version}:
            findings.append(bad(f"generated for driver {', '.join(sorted(versions))}; installed driver "
                                f"{inv.driver_version}", observed=sorted(versions), expected=inv.driver_version,
                                subject=path))
        else:
            findings.append(ok(f"driver {inv.driver_version}", observed=sorted(versions), subject=path))
    return findings


@check("containers.docker.config", "Docker's daemon.json is one JSON object (dockerd starts with it)",
       area="containers", remediation="Fix /etc/docker/daemon.json by hand: dockerd refuses to start with a "
                                      "file that is not valid JSON (dockerd reference: daemon configuration file).")
def docker_config(ctx: AuditContext):
    sys = ctx.host.sys
    if not _docker_installed(sys):
        return skip(f"Docker is not installed (no {docker.DOCKERD[0]})")
    cfg, why = _daemon_json(sys)
    if cfg is None:
        return bad(why)
    shm = docker.shm_size(cfg)
    runtimes = sorted(cfg.get("runtimes") or {}) if isinstance(cfg.get("runtimes"), dict) else []
    observed = {"default-shm-size": shm, "runtimes": runtimes, "default-runtime": cfg.get("default-runtime")}
    note = "" if sys.exists(docker.DAEMON_JSON) else " (no daemon.json: Docker's defaults)"
    return ok(f"default /dev/shm {docker.size_text(shm) if shm else 'not a size'}, runtimes "
              f"{', '.join(runtimes) or 'none'}{note}", observed=observed)


@check("containers.enroot", "enroot gives containers the GPUs and the host's /dev/shm", area="containers",
       remediation="Install enroot's NVIDIA hook (enroot+caps package: /etc/enroot/hooks.d/98-nvidia.sh) and keep "
                   "the /dev/shm bind of /etc/enroot/mounts.d/10-system.fstab (NCCL's shared-memory transport).")
def enroot_config(ctx: AuditContext):
    sys = ctx.host.sys
    conf = sys.read(enroot.ENROOT_CONF)
    if conf is None and not sys.listdir(enroot.MOUNTS_D):
        return skip(f"enroot is not installed (no {enroot.ENROOT_CONF})")
    settings = enroot.parse_enroot_conf(conf or "")
    mounts = enroot.enroot_mounts(sys)
    problems = []
    if "/dev/shm" not in mounts:
        problems.append(f"no /dev/shm mount in {enroot.MOUNTS_D}/*.fstab")
    if not sys.exists(enroot.NVIDIA_HOOK):
        problems.append(f"no NVIDIA hook ({enroot.NVIDIA_HOOK}): containers see no GPU")
    observed = {"settings": settings, "mounts": mounts}
    if problems:
        return bad("; ".join(problems), observed=observed)
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if k.endswith(("_PATH", "MAX_PROCESSORS")))
    return ok(f"/dev/shm bound, NVIDIA hook present{'; ' + shown if shown else ''}", observed=observed)


@check("containers.pyxis", "pyxis is in Slurm's plugstack where enroot and Slurm are installed", area="containers",
       remediation="Add `required /usr/lib/x86_64-linux-gnu/slurm/spank_pyxis.so` to /etc/slurm/plugstack.conf "
                   "(or plugstack.conf.d/pyxis.conf) so `srun --container-image` works (NVIDIA pyxis README).")
def pyxis(ctx: AuditContext):
    sys = ctx.host.sys
    if sys.read(enroot.ENROOT_CONF) is None:
        return skip(f"enroot is not installed (no {enroot.ENROOT_CONF})")
    if not sys.exists("/etc/slurm/slurm.conf") and not sys.exists(enroot.PLUGSTACK):
        return skip("no Slurm configuration (/etc/slurm/slurm.conf)")
    found = enroot.pyxis_lines(sys)
    if not found:
        return bad(f"enroot is installed but no plugstack file loads {enroot.PYXIS_SO}")
    return ok(f"{enroot.PYXIS_SO} loaded by {', '.join(found)}", observed=found)
