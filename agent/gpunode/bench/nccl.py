"""nccl-tests wrapper: find the binaries, build argv (pure), parse text and -J JSON (pure), judge.

A run is only ok when the footer is there, no row has #wrong > 0, the out-of-bounds count is 0,
the process exited 0 and no failure line was printed. Failure lines are those nccl-tests prints
(src/common.h, src/common.cu, src/util.cu of nccl-tests 2.x): "Test NCCL failure", "Test CUDA
failure", ".. Test failure", "Test timeout", "rank=N #wrong=M", "# error: ..." and FAILED on a
footer line. Wrong data and out-of-bounds are FAIL (the node computes wrong sums); a crash, a
timeout, truncated output or a non-zero exit without wrong data is ERROR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpunode.bench import nccl_log
from gpunode.bench.results import Metric, errored, metric_status, skipped

TESTS = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv")
INSTALL_HINT = (
    "nccl-tests not found on PATH or in --nccl-tests-dir: build it from https://github.com/NVIDIA/nccl-tests "
    "(`make MPI=1 CUDA_HOME=... NCCL_HOME=...`, binaries in build/) and pass --nccl-tests-dir DIR"
)
FOOTER = "# Avg bus bandwidth"
# Lines nccl-tests prints when something broke (see the module docstring).
_FAILURE_LINES = re.compile(
    r"Test (NCCL|CUDA) failure|: Test failure |Test timeout \(|^rank=\d+ #wrong=\d+|^# error: |"
    r"Invalid number of GPUs|^invalid option|FAILED"
)
_VERSION = re.compile(r"^# nccl-tests version (\S+)(?: nccl-headers=(\d+) nccl-library=(\d+))?")


@dataclass(frozen=True)
class NcclConfig:
    test: str = "all_reduce"
    ngpus: int = 1  # GPUs per process (-g)
    min_bytes: int = 8
    max_bytes: int = 1 << 30
    step_factor: int = 2
    iters: int = 20
    warmup: int = 5
    check: int = 1  # -c: validate results (never turned off: wrong data must be seen)
    dtype: str = "float"
    op: str = "sum"

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"nccl test {self.test!r} not in {', '.join(TESTS)}")
        if self.min_bytes > self.max_bytes or self.min_bytes < 0:
            raise ValueError(f"nccl sizes: min {self.min_bytes} > max {self.max_bytes}")
        if self.ngpus < 1 or self.iters < 1 or self.warmup < 0 or self.step_factor < 2:
            raise ValueError("nccl: ngpus and iters >= 1, warmup >= 0, step factor >= 2")


def busbw_factor(test: str, nranks: int) -> float:
    """busbw / algbw for each test (nccl-tests doc/PERFORMANCE.md): 2(n-1)/n for all-reduce,
    (n-1)/n for all-gather, reduce-scatter and all-to-all, 1 for send/recv."""
    if nranks < 1:
        raise ValueError("nranks must be >= 1")
    if test == "sendrecv":
        return 1.0
    return (2.0 if test == "all_reduce" else 1.0) * (nranks - 1) / nranks


def binary_name(test: str) -> str:
    return f"{test}_perf"


def find_binary(test: str, search_dirs: Sequence[str] = (), path_env: str | None = None) -> str | None:
    """`--nccl-tests-dir` (and its build/) first, then PATH."""
    name = binary_name(test)
    dirs: list[str] = []
    for d in search_dirs:
        dirs += [d, os.path.join(d, "build")]
    for d in dirs:
        found = shutil.which(name, path=d)
        if found:
            return found
    return shutil.which(name, path=path_env if path_env is not None else os.environ.get("PATH", ""))


def supports_json(help_text: str) -> bool:
    """nccl-tests >= 2.14 documents `-J,--output_file` in its usage text."""
    return "-J,--output_file" in help_text or "--output_file" in help_text


def argv(binary: str, cfg: NcclConfig, json_file: str | None = None) -> list[str]:
    out = [binary, "-b", str(cfg.min_bytes), "-e", str(cfg.max_bytes), "-f", str(cfg.step_factor),
           "-g", str(cfg.ngpus), "-n", str(cfg.iters), "-w", str(cfg.warmup), "-c", str(cfg.check)]
    if cfg.test not in ("alltoall", "sendrecv", "all_gather"):
        out += ["-o", cfg.op]
    out += ["-d", cfg.dtype]
    if json_file:
        out += ["-J", json_file]
    return out


def launcher_prefix(kind: str, hosts: Sequence[str], procs_per_host: int, env_names: Sequence[str] = ()) -> list[str]:
    """One process per GPU: `mpirun` (Open MPI syntax) or `srun` over `hosts`; run argv with -g 1."""
    if procs_per_host < 1:
        raise ValueError("processes per host must be >= 1")
    hosts = list(hosts) or ["localhost"]
    total = len(hosts) * procs_per_host
    if kind == "mpirun":
        prefix = ["mpirun", "-np", str(total), "-H", ",".join(f"{h}:{procs_per_host}" for h in hosts),
                  "--bind-to", "none", "--map-by", f"ppr:{procs_per_host}:node"]
        for name in sorted(set(env_names) | set(DEBUG_ENV)):
            prefix += ["-x", name]
        return prefix
    if kind == "srun":
        return ["srun", "--nodes", str(len(hosts)), "--ntasks-per-node", str(procs_per_host),
                "--nodelist", ",".join(hosts), "--export", "ALL", "--kill-on-bad-exit=1"]
    raise ValueError(f"launcher {kind!r}: choose mpirun or srun")


def nccl_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The NCCL_* (and NCCL-test) settings of the caller, passed through and recorded."""
    return {k: v for k, v in sorted(environ.items()) if k.startswith("NCCL_")}


# What every run adds so that NCCL says which transports it chose (gpunode.bench.nccl_log); the
# caller's own NCCL_DEBUG_FILE would take the lines away from the output, so it is dropped.
DEBUG_ENV = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET,GRAPH,ENV,TUNING"}


def with_debug(environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k != "NCCL_DEBUG_FILE"}
    return {**env, **DEBUG_ENV}


def prediction(output: str, test: str, nranks: int) -> dict | None:
    """NCCL's own bandwidth model for this test (its TUNING table): the best algorithm bandwidth
    and the bus bandwidth it means (busbw_factor), in GB/s."""
    coll = nccl_log.COLLECTIVES.get(test)
    best = nccl_log.parse(output).prediction(coll) if coll else None
    if best is None:
        return None
    column, algbw = best
    return {"collective": coll, "algo/proto": column, "algbw": algbw,
            "busbw": round(algbw * busbw_factor(test, max(nranks, 1)), 3), "source": "NCCL_DEBUG_SUBSYS=TUNING"}


def transport_verdict(output: str, fabric: nccl_log.Fabric) -> tuple[str, str, dict]:
    """-> (status, why, what NCCL chose) from the run's NCCL INFO lines (nccl_log.judge)."""
    log = nccl_log.parse(output)
    status, why = nccl_log.judge(log, fabric)
    return status, why, {**log.to_json(), "verdict": status, "why": why}


@dataclass
class Row:
    bytes: int
    count: int
    type: str
    redop: str
    time_us: float
    algbw: float
    busbw: float
    wrong: int | None  # None when the data check was off (N/A)
    in_place_time_us: float | None = None
    in_place_algbw: float | None = None
    in_place_busbw: float | None = None
    in_place_wrong: int | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class NcclRun:
    """What one nccl-tests run printed, parsed; `nccl_verdict` decides its status."""

    rows: list[Row] = field(default_factory=list)
    version: str | None = None
    nccl_version: str | None = None
    ngpus: int | None = None  # GPUs per process, from the header
    ranks: int = 0  # "#  Rank N ..." device lines
    out_of_bounds: int | None = None  # None: no footer line
    avg_busbw: float | None = None
    footer: bool = False
    failures: list[str] = field(default_factory=list)

    @property
    def wrong(self) -> int:
        return sum((r.wrong or 0) + (r.in_place_wrong or 0) for r in self.rows)

    @property
    def largest(self) -> Row | None:
        return max(self.rows, key=lambda r: r.bytes) if self.rows else None


def _num(text: str) -> float:
    return float(text)


def _wrong(text: str) -> int | None:
    return None if text == "N/A" else int(float(text))


def _nccl_code(code: int) -> str:
    return f"{code // 10000}.{(code // 100) % 100}.{code % 100}" if code >= 10000 else str(code)


def parse_text(output: str) -> NcclRun:
    """nccl-tests' text output; NCCL's own INFO lines mixed into it (NCCL_DEBUG=INFO) are skipped."""
    run = NcclRun()
    for raw in output.splitlines():
        stripped = raw.strip()
        if not stripped or nccl_log.is_nccl_line(stripped):
            continue
        if stripped.startswith("#"):
            _read_comment(run, stripped)
            continue
        row = _parse_row(stripped)
        if row is not None:
            run.rows.append(row)
        elif _FAILURE_LINES.search(stripped):
            run.failures.append(stripped)
    return run


def _read_comment(run: NcclRun, line: str) -> None:
    """A `#` line: the version and device header, the two footer lines, or an error."""
    m = _VERSION.match(line)
    if m:
        run.version = m.group(1)
        if m.group(3):
            run.nccl_version = _nccl_code(int(m.group(3)))
    elif line.startswith("# nThread"):
        g = re.search(r"nGpus (\d+)", line)
        run.ngpus = int(g.group(1)) if g else None
    elif re.match(r"#\s+Rank\s+\d+", line):
        run.ranks += 1
    elif line.startswith("# Out of bounds values"):
        _read_out_of_bounds(run, line)
    elif line.startswith(FOOTER):
        _read_footer(run, line)
    elif line.startswith("# error:"):
        run.failures.append(line)


def _read_out_of_bounds(run: NcclRun, line: str) -> None:
    value = line.split(":", 1)[1].split()
    run.out_of_bounds = int(value[0]) if value and value[0].lstrip("-").isdigit() else None
    if "FAILED" in line:
        run.failures.append(line)


def _read_footer(run: NcclRun, line: str) -> None:
    value = line.split(":", 1)[1].split()
    try:
        run.avg_busbw = float(value[0])
        run.footer = True
    except (IndexError, ValueError):
        run.failures.append(f"unreadable footer: {line}")
    if "FAILED" in line:
        run.failures.append(line)


def _parse_row(line: str) -> Row | None:
    parts = line.split()
    if len(parts) < 9 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    try:
        row = Row(int(parts[0]), int(parts[1]), parts[2], parts[3], _num(parts[5]), _num(parts[6]),
                  _num(parts[7]), _wrong(parts[8]))
        if len(parts) >= 13:
            row.in_place_time_us, row.in_place_algbw = _num(parts[9]), _num(parts[10])
            row.in_place_busbw, row.in_place_wrong = _num(parts[11]), _wrong(parts[12])
    except ValueError:
        return None  # a line cut in the middle (truncated output)
    return row


def parse_json(text: str) -> NcclRun:
    """The -J file. Raises ValueError when it is not complete JSON (a crash leaves it cut)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"nccl-tests JSON output is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise ValueError("nccl-tests JSON output is not an object")
    run = NcclRun()
    if isinstance(data.get("nccl_version"), int):
        run.nccl_version = _nccl_code(data["nccl_version"])
    cfg = data.get("config") or {}
    run.ngpus = cfg.get("ngpus")
    run.ranks = len(cfg.get("devices") or [])
    run.rows = [_json_row(item) for item in data.get("results") or []]
    _read_json_footer(run, data)
    run.failures += [f"# error: {err}" for err in data.get("errors") or [] if err]
    return run


def _json_nwrong(side: dict) -> int | None:
    return None if side.get("nwrong") is None else int(side["nwrong"])


def _json_row(item: dict) -> Row:
    oop, inp = item.get("out_of_place") or {}, item.get("in_place") or {}
    return Row(
        bytes=int(item["size"]), count=int(item["count"]), type=str(item.get("type")),
        redop=str(item.get("redop")), time_us=float(oop.get("time", oop.get("cpu_time", 0.0))),
        algbw=float(oop.get("alg_bw", 0.0)), busbw=float(oop.get("bus_bw", 0.0)), wrong=_json_nwrong(oop),
        in_place_time_us=inp.get("time"), in_place_algbw=inp.get("alg_bw"), in_place_busbw=inp.get("bus_bw"),
        in_place_wrong=_json_nwrong(inp),
    )


def _json_failed(section: dict) -> bool:
    return section.get("okay") is False or section.get("okay") == "false"


def _read_json_footer(run: NcclRun, data: dict) -> None:
    """The two footer sections of the -J file: out-of-bounds values and the average bus bandwidth."""
    oob = data.get("out_of_bounds")
    if isinstance(oob, dict):
        run.out_of_bounds = int(oob.get("count", 0))
        if _json_failed(oob):
            run.failures.append(f"out of bounds values: {run.out_of_bounds} FAILED")
    avg = data.get("average_bus_bandwidth")
    if isinstance(avg, dict):
        run.avg_busbw = float(avg.get("bandwidth", 0.0))
        run.footer = True
        if _json_failed(avg):
            run.failures.append(f"average bus bandwidth {run.avg_busbw} below NCCL_TESTS_MIN_BW: FAILED")


def nccl_verdict(run: NcclRun, rc: int, timed_out: bool = False, spawn_error: str | None = None) -> tuple[str, str]:
    """-> (status, message). Never PASS unless everything says so."""
    if spawn_error:
        return "ERROR", spawn_error
    if run.wrong > 0:
        return "FAIL", f"data check failed: {run.wrong} wrong element(s) (#wrong > 0)"
    if run.out_of_bounds:
        return "FAIL", f"out of bounds values: {run.out_of_bounds} FAILED"
    footer_failed = [f for f in run.failures if "FAILED" in f]
    if footer_failed:
        return "FAIL", footer_failed[0]
    if timed_out:
        return "ERROR", "timed out: the process group was killed"
    if run.failures:
        return "ERROR", f"nccl-tests reported: {run.failures[0]}"
    if rc != 0:
        return "ERROR", f"exited with status {rc}"
    if not run.rows:
        return "ERROR", "no result rows in the output"
    if not run.footer or run.out_of_bounds is None:
        return "ERROR", f"output truncated: no '{FOOTER}' / out-of-bounds footer"
    return "PASS", ""


def metric(cfg: NcclConfig, run: NcclRun, status: str, message: str, nprocs: int, env: Mapping[str, str]) -> Metric:
    """busbw (GB/s, out-of-place) at the largest size as `nccl.<test>.busbw`."""
    status = metric_status(status)
    name = f"nccl.{cfg.test}.busbw"
    total = run.ranks or (run.ngpus or cfg.ngpus) * max(nprocs, 1)
    cond = {"test": cfg.test, "ngpus": total, "nprocs": nprocs, "min_bytes": cfg.min_bytes,
            "max_bytes": cfg.max_bytes, "dtype": cfg.dtype, "op": cfg.op if cfg.test not in ("alltoall", "sendrecv", "all_gather") else None,
            "iters": cfg.iters, "warmup": cfg.warmup, "check": cfg.check, "algo env": dict(env),
            "aggregate": "out-of-place busbw at the largest size"}
    detail = {"rows": [r.to_json() for r in run.rows], "avg_busbw": run.avg_busbw,
              "nccl_tests": run.version, "nccl": run.nccl_version}
    largest = run.largest
    if status != "PASS" or largest is None:
        # A FAIL keeps the figure it measured (wrong data at that speed); an ERROR has none.
        value = largest.busbw if largest is not None and status == "FAIL" else None
        return Metric(name, None, value, "GB/s", status, message, cond, None, detail)
    cond["largest_bytes"] = largest.bytes
    if busbw_factor(cfg.test, total) == 0:
        return Metric(name, None, None, "GB/s", "SKIP",
                      f"1 GPU: {cfg.test} bus bandwidth is 0 by definition (data check passed; algbw "
                      f"{largest.algbw:.1f} GB/s at {largest.bytes} bytes)", cond, None, detail)
    return Metric(name, None, largest.busbw, "GB/s", "PASS", "", cond, None, detail)


def _parsed_run(stdout: str, json_file: str | None) -> tuple[NcclRun, str]:
    """-> (run, note): the -J file when it was written (the text adds the version, its failures
    and the rows the file lacks), else the text; note says why the file could not be read."""
    text_run = parse_text(stdout)
    if not json_file or not Path(json_file).exists():
        return text_run, ""
    try:
        run = parse_json(Path(json_file).read_text(errors="replace"))
    except ValueError as exc:
        return text_run, str(exc)
    run.version = text_run.version
    run.failures = sorted(set(run.failures) | set(text_run.failures))
    if not run.rows:
        run.rows = text_run.rows
    return run, ""


def _run_verdict(run: NcclRun, result, note: str) -> tuple[str, str]:
    """nccl_verdict, an unreadable -J file made an ERROR, and stderr's last line beside an ERROR."""
    status, message = nccl_verdict(run, result.rc, result.timed_out, result.error)
    if status == "PASS" and note:
        status, message = "ERROR", note
    if status == "ERROR" and result.stderr.strip():
        message += f" (stderr: {result.stderr.strip().splitlines()[-1][:200]})"
    return status, message


def run_test(runner, binary: str, cfg: NcclConfig, timeout: float, environ: Mapping[str, str],
             prefix: Sequence[str] = (), nprocs: int = 1, fabric: nccl_log.Fabric | None = None) -> Metric:
    """Run one nccl-tests binary through the Runner (its timeout kills the process group), with
    NCCL_DEBUG=INFO: a PASS whose transports are wrong (sockets beside active RDMA ports, SHM
    beside NVLink) becomes FAIL with the reason; what NCCL chose is kept in the detail."""
    help_result = runner.run([binary, "-h"], timeout=30, env=dict(environ))
    use_json = supports_json(help_result.stdout + help_result.stderr)
    env = nccl_env(environ)  # the caller's settings, recorded as conditions (not the debug ones)
    environ = with_debug(environ)
    with tempfile.TemporaryDirectory(prefix="gpunode-nccl-") as tmp:  # 0700, removed afterwards
        json_file = str(Path(tmp) / "result.json") if use_json else None
        result = runner.run([*prefix, *argv(binary, cfg, json_file)], timeout=timeout, env=dict(environ))
        run, note = _parsed_run(result.stdout, json_file)
    status, message = _run_verdict(run, result, note)
    t_status, t_why, chosen = transport_verdict(result.stdout + "\n" + result.stderr, fabric or nccl_log.Fabric())
    if status == "PASS" and t_status == "FAIL":
        status, message = "FAIL", t_why
    m = metric(cfg, run, status, message, nprocs, env)
    m.conditions["output"] = "json (-J)" if use_json and not note else "text"
    if m.detail is not None:
        m.detail["nccl_transport"] = chosen
        predicted = prediction(result.stdout, cfg.test, run.ranks or cfg.ngpus * max(nprocs, 1))
        if predicted:
            m.detail["nccl_prediction"] = predicted  # beside the figure, never judged: NCCL's model
    if t_status == "WARN" and not m.message:
        m.message = t_why  # a metric has no WARN: the figure stands, the note says why it may be low
    return m


def not_installed(test: str) -> Metric:
    return skipped(f"nccl.{test}.busbw", "GB/s", INSTALL_HINT, test=test)


def broken(test: str, why: str) -> Metric:
    return errored(f"nccl.{test}.busbw", "GB/s", why, test=test)
