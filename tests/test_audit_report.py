"""The audit report's text, in process: the Nagios status line in each of its three shapes
(problems named, what passed, why nothing was checked) and the table's rows (a fix shown with
--verbose for WARN and FAIL only, SKIPs that share a reason folded into one row in a table)."""

from __future__ import annotations

import io

from rich.console import Console

from gpunode.audit.engine import Result, Status
from gpunode.audit.report import GROUP_SKIPS_FROM, nagios_output, render_report

META = {"host": "h", "profile": "training", "source": "live"}


def result(i, status: Status, message: str = "m", subject=None, remediation: str = "") -> Result:
    return Result(id=f"a.c{i}", title="t", area="a", severity="warning", status=status, message=message,
                  subject=subject, remediation=remediation)


def test_nagios_names_each_problem_once_and_at_most_eight():
    bad = [result(i, Status.WARN, subject=s) for i in range(9) for s in (None, None)]  # each label twice
    head = nagios_output(bad).splitlines()[0]
    names = ", ".join(f"a.c{i}" for i in range(8))
    assert head.startswith(f"GPUNODE WARNING - 18 WARN: {names} ... | pass=0;;;0 ")
    assert nagios_output(bad[:16]).splitlines()[0].startswith(f"GPUNODE WARNING - 16 WARN: {names} | ")


def test_nagios_counts_what_passed_and_what_was_skipped():
    passed = [result(0, Status.PASS), result(1, Status.PASS)]
    assert nagios_output(passed).startswith("GPUNODE OK - 2 checks passed | pass=2;;;0 ")
    skipped = passed + [result(2, Status.SKIP)]
    assert nagios_output(skipped).startswith("GPUNODE OK - 2 checks passed, 1 skipped | ")


def test_nagios_all_skipped_names_at_most_three_reasons_sorted():
    skips = [result(i, Status.SKIP, message=f"r{4 - i}") for i in range(4)]
    assert nagios_output(skips).startswith("GPUNODE UNKNOWN - nothing checked: all 4 checks skipped (r1; r2; r3 ...) | ")
    assert nagios_output(skips[1:]).startswith("GPUNODE UNKNOWN - nothing checked: all 3 checks skipped (r1; r2; r3) | ")


def rows(results, fmt: str, **kw) -> list[str]:
    buf = io.StringIO()
    render_report(results, META, Console(file=buf, width=200, color_system=None), fmt, **kw)
    return buf.getvalue().splitlines()


def test_verbose_shows_the_fix_of_a_warn_or_fail_only():
    results = [result(0, Status.WARN, "w", remediation="do x"), result(1, Status.FAIL, "f", remediation="do y"),
               result(2, Status.PASS, "p", remediation="do z"), result(3, Status.WARN, "w2")]
    assert [r.split("\t")[-1] for r in rows(results, "tsv", verbose=True)[1:]] == [
        "w (fix: do x)", "f (fix: do y)", "p", "w2"]
    assert [r.split("\t")[-1] for r in rows(results, "tsv")[1:]] == ["w", "f", "p", "w2"]


def test_skips_sharing_a_reason_fold_into_one_row_in_a_table_only():
    skips = [result(i, Status.SKIP, "no GPU", subject="GPU0" if i == 0 else None) for i in range(GROUP_SKIPS_FROM)]
    results = [result(90, Status.PASS, "p"), *skips, result(91, Status.SKIP, "other")]
    table = "\n".join(rows(results, "table"))
    assert table.count(f"{GROUP_SKIPS_FROM} checks") == 1 and "no GPU: a.c0 (GPU0), a.c1" in table
    assert table.index("a.c90") < table.index("checks") < table.index("a.c91")  # where its first SKIP stood
    assert f"{GROUP_SKIPS_FROM} checks" not in "\n".join(rows(results, "table", every_skip=True))
    tsv = rows(results, "tsv")
    assert len(tsv) == 1 + len(results) and tsv[2].split("\t")[1:] == ["SKIP", "a.c0", "GPU0", "no GPU"]
