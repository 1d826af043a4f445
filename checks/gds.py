"""GPUDirect Storage: nvidia-fs loaded where cuFile is configured, cufile.json sane, and
`gdscheck -p`'s platform verdict where the tool is installed."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, ok, skip
from gpunode.host.facts import gds
from gpunode.inputs import InputError

GDSCHECK_TIMEOUT_S = 20.0


def _cufile(sys) -> tuple[dict | None, list[str], str]:
    """(document or None, problems, why unreadable); SKIP when GDS is not set up here."""
    text = sys.read(gds.CUFILE_JSON)
    if text is None:
        raise CheckSkipped(f"GPUDirect Storage not configured here (no {gds.CUFILE_JSON})")
    try:
        data, problems = gds.parse_cufile(text)
    except InputError as exc:
        return None, [], str(exc)
    return data, problems, ""


@check("gds.nvidia_fs", "nvidia-fs is loaded where GPUDirect Storage is configured", area="gds",
       remediation="modprobe nvidia-fs (package nvidia-fs / nvidia-gds); without it cuFile falls back to "
                   "compatibility mode (POSIX reads through the page cache) or fails where compat mode is off.")
def nvidia_fs(ctx: AuditContext):
    data, _, why = _cufile(ctx.host.sys)
    loaded = ctx.host.sys.exists(gds.NVIDIA_FS)
    version = ctx.host.sys.read_value(f"{gds.NVIDIA_FS}/version") if loaded else None
    if loaded:
        return ok(f"nvidia-fs loaded{' (' + version + ')' if version else ''}", observed=True)
    props = (data or {}).get("properties")
    compat = props.get("allow_compat_mode", True) if isinstance(props, dict) else None
    if compat is False:
        return bad(f"nvidia-fs not loaded ({gds.NVIDIA_FS} absent) and cufile.json allow_compat_mode false: "
                   "cuFile I/O fails", observed=False, expected="loaded")
    return bad(f"nvidia-fs not loaded ({gds.NVIDIA_FS} absent): cuFile runs in compatibility mode "
               f"(no GPUDirect){'; ' + why if why else ''}", observed=False, expected="loaded")


@check("gds.cufile", "cufile.json parses and its documented keys hold sane values", area="gds",
       remediation="Fix /etc/cufile.json (GDS configuration guide: properties.max_direct_io_size_kb a multiple "
                   "of 64, allow_compat_mode true/false, rdma_dev_addr_list IP addresses of the RDMA NICs).")
def cufile(ctx: AuditContext):
    data, problems, why = _cufile(ctx.host.sys)
    if data is None:
        return bad(why)
    props = data.get("properties")
    props = props if isinstance(props, dict) else {}
    observed = {k: props.get(k) for k in ("max_direct_io_size_kb", "allow_compat_mode", "rdma_dev_addr_list")}
    if problems:
        return bad("; ".join(problems), observed=observed)
    shown = ", ".join(f"{k} {v}" for k, v in observed.items() if v is not None)
    return ok(shown or "no properties set (cuFile defaults)", observed=observed)


@check("gds.gdscheck", "gdscheck -p verifies the platform and every GPU supports GDS", area="gds",
       cost="slow", remediation="Read gdscheck -p's report: IOMMU must be off or in passthrough, nvidia-fs "
                                "loaded, the filesystem's driver supported (GDS troubleshooting guide).")
def gdscheck(ctx: AuditContext):
    tool = next((p for p in gds.GDSCHECK if ctx.host.sys.exists(p)), None)
    if tool is None:
        return skip(f"gdscheck not installed ({gds.GDSCHECK[0]})")
    result = ctx.host.runner.run([tool, "-p"], timeout=GDSCHECK_TIMEOUT_S)
    if result.error:
        return skip(f"gdscheck cannot run: {result.error}")
    if result.timed_out:
        return error(f"gdscheck -p gave no answer within {GDSCHECK_TIMEOUT_S:.0f}s")
    try:
        report = gds.parse_gdscheck(result.stdout)
    except ValueError as exc:
        return error(f"gdscheck -p exited {result.rc}: {exc}")
    unsupported = sorted(i for i, yes in report.gpus.items() if not yes)
    filesystems = gds.supported_filesystems(report)
    observed = {"verified": report.verified, "gpus": report.gpus, "filesystems": filesystems}
    if report.verified is not True or unsupported:
        parts = [] if report.verified is True else ["platform verification " +
                                                    ("failed" if report.verified is False else "not reported")]
        parts += [f"GPU{i} does not support GDS" for i in unsupported]
        return bad("; ".join(parts), observed=observed, expected="verified, every GPU supports GDS")
    return ok(f"platform verified; {len(report.gpus)} GPU(s) support GDS; filesystems: "
              f"{', '.join(filesystems) or 'none supported'}", observed=observed)
