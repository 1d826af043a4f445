"""The `gpunode fleet locate` report: a JSON document (schema gpunode.fleet.locate/1), its text
forms (table, plain, tsv) and an HTML page, with the suspects, their evidence and a drain line.
Drain lines are suggestions: locate drains only with --drain (a node fault found by two tests is
strong evidence, but who drains what in a running cluster is the operator's call)."""

from __future__ import annotations

import shlex
from html import escape

from gpunode.exits import EXIT_CODES
from gpunode.fleet.locate.algorithm import Outcome, Verdict, stragglers
from gpunode.fleet.locate.pairtests import Figure

SCHEMA = "gpunode.fleet.locate/1"
KIND_STATUS = {"node": "FAIL", "link": "FAIL", "inconclusive": "WARN", "straggler": "WARN"}


def _tests(outcome: Outcome, names: list[str], details: list[list[Figure]] | None) -> list[dict]:
    rows = []
    for r, rnd in enumerate(outcome.rounds):
        for i, ((a, b), role) in enumerate(zip(rnd.pairs, rnd.roles or ["match"] * len(rnd.pairs), strict=False)):
            fig = details[r][i] if details and r < len(details) and i < len(details[r]) else None
            rows.append({"round": r + 1, "a": names[a], "b": names[b], "role": role,
                         "figure": rnd.figures[i] if i < len(rnd.figures) else None,
                         "passed": rnd.passed[i] if i < len(rnd.passed) else None,
                         "error": fig.error if fig else None, "rails": fig.rails if fig and fig.rails else None})
    return rows


def _verdict(v: Verdict, names: list[str], tests: list[dict]) -> dict:
    who = {names[x] for x in v.nodes}
    if v.kind == "link" or (v.kind in ("inconclusive", "straggler") and len(v.nodes) == 2):
        evidence = [t for t in tests if {t["a"], t["b"]} == who]
    else:
        evidence = [t for t in tests if who & {t["a"], t["b"]}]
    return {"kind": v.kind, "status": KIND_STATUS[v.kind], "nodes": [names[x] for x in v.nodes], "why": v.why,
            "failed": v.fails, "tests": v.tests, "anchors": [names[x] for x in v.anchors],
            "anchors_failed": v.anchors_failed,
            "anchors_agreeing": v.anchors_failed if v.kind == "node" else len(v.anchors) - v.anchors_failed,
            "evidence": evidence}


def drain_targets(verdicts: list[dict], test: str, exact: bool = False) -> list[tuple[str, str]]:
    """(Slurm node name, gpunode: drain: reason) per node fault: an inventory host's short name
    (exact: the name as it is, Slurm's own under --slurm), a reason under scontrol.REASON_MAX that
    says what found it; `gpunode: drain:` keeps the gate's health check from resuming the node."""
    from gpunode.slurm.scontrol import DRAIN_PREFIX

    out = []
    for v in verdicts:
        if v["kind"] != "node":
            continue
        node = v["nodes"][0] if exact or _is_ip(v["nodes"][0]) else v["nodes"][0].split(".")[0]
        tests = f", failed {v['failed']} of {v['tests']} tests" if v["tests"] else ""
        out.append((node, f"{DRAIN_PREFIX} fleet locate {test}: node fault{tests}"))
    return out


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def drain_lines(verdicts: list[dict], test: str, exact: bool = False) -> list[str]:
    """What an operator would run: `gpunode slurm drain`, one line per node fault (it never
    overwrites a reason someone else set)."""
    return [shlex.join(["gpunode", "slurm", "drain", node, "--reason", reason])
            for node, reason in drain_targets(verdicts, test, exact)]


def locate_document(outcome: Outcome, names: list[str], *, test: str, unit: str, seed: int | None,
                    repeat: int, ratio: float, expectation: float | None, expectation_source: str,
                    details: list[list[Figure]] | None = None, runs: list[dict] | None = None,
                    wall_s: float | None = None, z: float = -3.5, round0: dict | None = None,
                    slurm_job: str | None = None) -> dict:
    """round0: the all-nodes test's {figure, passed, error} when one ran; passed: locate stopped there.
    slurm_job: --slurm/--job's job; the names are Slurm's own then (drained as they are)."""
    tests = _tests(outcome, names, details)
    faults = {x for v in outcome.verdicts if v.kind == "node" for x in v.nodes}
    verdicts = [_verdict(v, names, tests) for v in outcome.verdicts + stragglers(outcome.rounds, faults, z)]
    worst = _worst(verdicts, tests, round0)
    status = next(s for s, c in EXIT_CODES.items() if c == worst)
    extra = 1 if round0 else 0  # the all-nodes test is one round and one test more
    return {
        "schema": SCHEMA, "test": test, "unit": unit, "hosts": names, "seed": seed, "repeat": repeat,
        "expectation": {"value": expectation, "source": expectation_source, "ratio": ratio,
                        "floor": None if expectation is None else round(expectation * ratio, 4)},
        "round0": round0,
        "rounds": len(outcome.rounds) + extra, "tests": len(tests) + extra,
        "wall_s": wall_s, "runs": runs or [],
        "verdicts": verdicts, "drain": drain_lines(verdicts, test, exact=slurm_job is not None), "results": tests,
        "summary": {k: sum(1 for v in verdicts if v["kind"] == k) for k in ("node", "link", "inconclusive", "straggler")},
        "status": status, "exit_code": worst, "slurm_job": slurm_job,
    }


def _worst(verdicts: list[dict], tests: list[dict], round0: dict | None) -> int:
    """The exit code: the worst verdict's; UNKNOWN when nothing was measured (nothing judged)."""
    worst = max((EXIT_CODES[v["status"]] for v in verdicts), default=0)
    if not any(t["figure"] is not None for t in tests) and not (round0 and round0["passed"]):
        worst = EXIT_CODES["UNKNOWN"]
    return worst


def _headline(doc: dict) -> str:
    exp = doc["expectation"]
    value = "none" if exp["value"] is None else f"{exp['value']:.4g} {doc['unit']}"
    wall = "" if doc["wall_s"] is None else f" in {doc['wall_s']:.1f}s"
    return (f"gpunode fleet locate {doc['test']}: {len(doc['hosts'])} hosts, {doc['rounds']} rounds, "
            f"{doc['tests']} tests{wall}; expectation {value} ({exp['source']}), fail below x{exp['ratio']:g}: "
            f"{doc['status']}")


def render_text(doc: dict, fmt: str) -> str:
    """plain: a headline, one line per verdict, the drain suggestions; tsv: one row per verdict."""
    if fmt == "tsv":
        rows = ["kind\tstatus\tnodes\tfailed\ttests\tanchors_agreeing\twhy"]
        rows += [f"{v['kind']}\t{v['status']}\t{','.join(v['nodes'])}\t{v['failed']}\t{v['tests']}\t"
                 f"{v['anchors_agreeing']}\t{v['why']}" for v in doc["verdicts"]]
        return "\n".join(rows) + "\n"
    lines = [_headline(doc)]
    if doc.get("round0"):
        lines.append(_round0_line(doc))
    if not doc["verdicts"]:
        lines.append("no node or link fault: every pair test passed")
    for v in doc["verdicts"]:
        figs = _evidence(v, 6)
        lines.append(f"{v['status']} {v['kind']} {' - '.join(v['nodes'])}: {v['why']} [{figs}]")
    lines += [f"suggested: {line}" for line in doc["drain"]]
    lines += _drained(doc)
    return "\n".join(lines) + "\n"


def _drained(doc: dict) -> list[str]:
    """--drain: what was done to each node fault."""
    return [f"drain {d['node']}: {d['action']}: {d['detail']}" for d in doc.get("drained") or []]


def _round0_line(doc: dict) -> str:
    r0 = doc["round0"]
    figure = "no figure" if r0["figure"] is None else f"{r0['figure']:.4g} {doc['unit']}"
    if r0["passed"]:
        return f"round 0, all {len(doc['hosts'])} nodes at once: {figure}, passed: no pair tests needed"
    return f"round 0, all {len(doc['hosts'])} nodes at once: {figure} {r0['error'] or 'below the floor'}: pair tests"


def _evidence(v: dict, most: int) -> str:
    return "; ".join(f"{t['a']}-{t['b']} {_fig(t)}" for t in v["evidence"][:most])


def _fig(t: dict) -> str:
    return "none" if t["figure"] is None else f"{t['figure']:.4g}{'' if t['passed'] else ' FAIL'}"


def render_table(doc: dict, console) -> None:
    from rich.table import Table

    console.print(_headline(doc), highlight=False)
    if doc.get("round0"):
        console.print(_round0_line(doc), highlight=False)
    table = Table(show_lines=False)
    for col in ("verdict", "nodes", "why", "evidence (pair figure)"):
        table.add_column(col)
    for v in doc["verdicts"]:
        table.add_row(f"{v['status']} {v['kind']}", " - ".join(v["nodes"]), v["why"],
                      _evidence(v, 6))
    if doc["verdicts"]:
        console.print(table)
    else:
        console.print("no node or link fault: every pair test passed", highlight=False)
    for line in doc["drain"]:
        console.print(f"suggested: {line}", highlight=False, soft_wrap=True)
    for line in _drained(doc):  # quotes a reason someone else wrote: text, never markup; wrapped on a terminal
        console.print(line, highlight=False, markup=False)


def locate_html(doc: dict) -> str:
    from gpunode.fleet.html import STYLE

    title = _headline(doc)
    rows = "".join(
        f'<tr><td class="{v["status"]}">{escape(v["status"])} {escape(v["kind"])}</td>'
        f'<td>{escape(" - ".join(v["nodes"]))}</td><td>{escape(v["why"])}</td>'
        f'<td>{escape(_evidence(v, 8))}</td></tr>'
        for v in doc["verdicts"])
    tests = "".join(
        f'<tr><td>{t["round"]}</td><td>{escape(t["role"])}</td><td>{escape(t["a"])}</td><td>{escape(t["b"])}</td>'
        f'<td class="{"OK" if t["passed"] else "FAIL"}">{escape(_fig(t))}</td><td>{escape(t["error"] or "")}</td></tr>'
        for t in doc["results"])
    drain = "".join(f"<li><code>{escape(line)}</code></li>" for line in doc["drain"])
    drain += "".join(f"<li>{escape(line)}</li>" for line in _drained(doc))
    heading = "Drain" if doc.get("drained") else "Drain (suggested, not done)"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
            "<h2>Suspects</h2><table><tr><th>verdict</th><th>nodes</th><th>why</th><th>evidence</th></tr>"
            f"{rows}</table>" + (f"<h2>{heading}</h2><ul>{drain}</ul>" if drain else "")
            + "<h2>Pair tests</h2><table><tr><th>round</th><th>role</th><th>a</th><th>b</th><th>figure</th>"
            f"<th>error</th></tr>{tests}</table></body></html>\n")
