"""`dcgmi diag -r N -j` wrapper (--with-dcgm): argv, parse, run through the Runner.

The parser follows the JSON of DCGM's diagnostic as NVIDIA's own tests read it (NVIDIA/DCGM
testing/python3: "DCGM Diagnostic" -> test_categories[] -> {category, tests[] -> {name,
results[] -> {entity_group, entity_id, status, warnings[]}, test_summary.status}}), and the
older 3.x shape ("DCGM GPU Diagnostic", results[] -> {gpu_id, status}).
Confirmed on real outputs (a capture of DCGM 4.2.3 quoted in a public parser, NVIDIA's tests):
the keys above and metadata.version / "Driver Version Detected". NOT confirmed on a real output
(documented or third-party only): "runtime_error", warnings[].error_id / error_severity, the
3.x gpu_id key and its string form. No DCGM was at hand to record from; fixtures are hand-made
from those shapes (tests/fixtures/dcgm/).
"""

from __future__ import annotations

import json
from typing import Any

from gpunode.diag.results import TestResult
from gpunode.host.runner import Runner

TIMEOUT_S = {1: 300, 2: 900, 3: 3600, 4: 10800}
INSTALL_HINT = "dcgmi not found: install datacenter-gpu-manager (DCGM) and start nv-hostengine"
STATUS = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "warning": "WARN", "skip": "SKIP", "not run": "SKIP"}


def argv(level: int, gpus: list[int] | None = None, binary: str = "dcgmi") -> list[str]:
    if level not in TIMEOUT_S:
        raise ValueError(f"DCGM diag level {level}: 1 to 4")
    out = [binary, "diag", "-r", str(level), "-j"]
    if gpus:
        out += ["-i", ",".join(str(g) for g in gpus)]
    return out


def _root(doc: Any) -> dict | None:
    if not isinstance(doc, dict):
        return None
    for key in ("DCGM Diagnostic", "DCGM GPU Diagnostic"):
        if isinstance(doc.get(key), dict):
            return doc[key]
    return None


def _entity(result: dict) -> int | None:
    group = result.get("entity_group")
    if group not in (None, "GPU"):
        return None
    for key in ("entity_id", "gpu_id"):
        value = result.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _warnings(result: dict) -> list[str]:
    out = []
    for w in result.get("warnings") or []:
        text = w.get("warning") if isinstance(w, dict) else w
        if isinstance(text, str) and text.strip():
            out.append(" ".join(text.split()))
    return out


def parse(text: str) -> tuple[list[TestResult], dict]:
    """-> (results named dcgm.<test>, meta {version, driver}). A document that is not a DCGM
    diagnostic, or has no test at all, is one ERROR result: never a PASS."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return [TestResult("dcgm", None, "ERROR", f"dcgmi diag printed no JSON: {exc}")], {}
    root = _root(doc)
    if root is None:
        return [TestResult("dcgm", None, "ERROR", "not a dcgmi diag -j document")], {}
    meta = _meta(doc, root)
    out: list[TestResult] = []
    if root.get("runtime_error"):
        out.append(TestResult("dcgm", None, "ERROR", f"DCGM runtime error: {root['runtime_error']}"))
    for category in root.get("test_categories") or []:
        if not isinstance(category, dict):
            continue
        for test in category.get("tests") or []:
            if isinstance(test, dict) and isinstance(test.get("name"), str):
                out += _test_results(category, test)
    if not out:
        out.append(TestResult("dcgm", None, "ERROR", "dcgmi diag reported no test results"))
    return out, meta


def _meta(doc: dict, root: dict) -> dict:
    """{version, driver} from the document's metadata (newer DCGM) or its diagnostic (older)."""
    meta_src = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else root
    return {k: str(meta_src[s]) for k, s in (("version", "version"), ("driver", "Driver Version Detected"))
            if meta_src.get(s) is not None}


def _per_gpu(test: dict) -> dict[int | None, tuple[str, list[str]]]:
    """GPU (None: the node) -> (status, warnings) of one test; its summary where it lists no result."""
    per_gpu: dict[int | None, tuple[str, list[str]]] = {}
    for r in test.get("results") or []:
        if isinstance(r, dict):
            per_gpu[_entity(r)] = (STATUS.get(str(r.get("status", "")).strip().lower(), "ERROR"), _warnings(r))
    if not per_gpu:
        summary = (test.get("test_summary") or {}).get("status") if isinstance(test.get("test_summary"), dict) else None
        per_gpu[None] = (STATUS.get(str(summary or "").strip().lower(), "ERROR"), [])
    return per_gpu


def _test_results(category: dict, test: dict) -> list[TestResult]:
    """One result per GPU (the node's first) of one test, named dcgm.<test>."""
    name = "dcgm." + "_".join(test["name"].lower().split())
    out = []
    for gpu, (status, warns) in sorted(_per_gpu(test).items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        message = "; ".join(warns) or f"{test['name']} ({category.get('category', '?')}): {status.lower()}"
        out.append(TestResult(name, gpu, status, message[:400], {"category": str(category.get("category", ""))}))
    return out


def run(runner: Runner, level: int, gpus: list[int] | None = None, binary: str = "dcgmi") -> tuple[list[TestResult], dict]:
    result = runner.run(argv(level, gpus, binary), timeout=TIMEOUT_S[level])
    if result.error is not None:
        status = "SKIP" if "not found" in result.error else "ERROR"
        return [TestResult("dcgm", None, status, INSTALL_HINT if status == "SKIP" else result.error)], {}
    if result.timed_out:
        return [TestResult("dcgm", None, "ERROR", f"dcgmi diag -r {level} did not finish in {TIMEOUT_S[level]} s")], {}
    text = result.stdout.strip()
    if not text:
        why = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.rc}"]
        return [TestResult("dcgm", None, "ERROR", f"dcgmi diag failed: {why[0][:200]}")], {}
    return parse(text)
