import time

from gpunode.audit.engine import (
    Check,
    CheckSkipped,
    Status,
    bad,
    check,
    ok,
    overall,
    run_checks,
    select,
)
from gpunode.host.seam import Facts


class Ctx:
    def __init__(self, is_root=True):
        self.host = type("H", (), {"facts": Facts(is_root=is_root, hostname="t", now=0.0)})()


def make(id, fn, severity="warning", **kw):
    return check(id, id, "test", severity=severity, **kw)(fn)


def test_bad_takes_the_severity():
    crit = make("a", lambda ctx: bad("broken"), severity="critical")
    warn_ = make("b", lambda ctx: bad("meh"))
    info = make("c", lambda ctx: bad("fyi"), severity="info")
    results = run_checks([crit, warn_, info], Ctx())
    assert [r.status for r in results] == [Status.FAIL, Status.WARN, Status.PASS]


def test_exception_is_contained_as_error_for_that_check_only():
    def boom(ctx):
        raise KeyError("x")

    results = run_checks([make("boom", boom), make("fine", lambda ctx: ok("ok"))], Ctx())
    assert results[0].status is Status.ERROR and "KeyError" in results[0].message
    assert results[1].status is Status.PASS


def test_hung_check_is_named_and_run_stays_in_budget():
    hang = make("hangs", lambda ctx: time.sleep(5) or ok("late"))
    started = time.monotonic()
    results = run_checks([hang, make("after", lambda ctx: ok("ok"))], Ctx(), check_timeout=0.3)
    assert time.monotonic() - started < 2
    assert results[0].status is Status.ERROR and "hangs" in results[0].message
    assert results[1].status is Status.PASS


def test_one_worker_thread_serves_the_checks_and_none_outlives_the_run():
    """A thread per check cost the gate ~1 ms before every job: one worker runs check after
    check; a hung check keeps its thread and the next one gets a fresh thread; when the run
    ends, every worker ends too (the hung one once its check returns): the watcher polls
    forever and must not collect threads."""
    import threading

    release = threading.Event()
    ran_on = []

    def note(ctx):
        ran_on.append(threading.current_thread())
        return ok("x")

    def hang(ctx):
        ran_on.append(threading.current_thread())
        release.wait(30)
        return ok("late")

    checks = [make("a", note), make("b", note), make("hangs", hang), make("c", note)]
    results = run_checks(checks, Ctx(), check_timeout=1.0)
    assert [r.status for r in results] == [Status.PASS, Status.PASS, Status.ERROR, Status.PASS]
    assert threading.current_thread() not in ran_on
    assert ran_on[0] is ran_on[1] is ran_on[2] and ran_on[3] is not ran_on[2]
    release.set()
    for worker in (ran_on[2], ran_on[3]):
        worker.join(10)
        assert not worker.is_alive()


def test_a_zero_watchdog_gives_each_check_a_result_and_never_crashes_the_run():
    """A budget of 0 s may end before the worker took the check: each check still has its
    result (hung, or passed where the worker was quicker) and the run goes on."""
    results = run_checks([make(f"c{i}", lambda ctx: ok("x")) for i in range(20)], Ctx(), check_timeout=0.0)
    assert len(results) == 20 and {r.status for r in results} <= {Status.PASS, Status.ERROR}


def test_total_budget_marks_unrun_checks():
    slow = make("slow", lambda ctx: time.sleep(0.4) or ok("ok"))
    results = run_checks([slow, make("next", lambda ctx: ok("ok"))], Ctx(), check_timeout=1, total_timeout=0.3)
    assert results[0].status is Status.ERROR
    assert results[1].status is Status.ERROR and "budget" in results[1].message


def test_needs_root_skips_with_reason():
    results = run_checks([make("r", lambda ctx: ok("x"), needs_root=True)], Ctx(is_root=False))
    assert results[0].status is Status.SKIP and results[0].message == "needs root"


def test_check_skipped_and_empty_results():
    def skipper(ctx):
        raise CheckSkipped("no NVIDIA driver/NVML")

    results = run_checks([make("s", skipper), make("e", lambda ctx: []), make("n", lambda ctx: None)], Ctx())
    assert [r.status for r in results] == [Status.SKIP, Status.ERROR, Status.ERROR]


def test_one_result_per_subject():
    c = make("multi", lambda ctx: [ok("a", subject="GPU0"), bad("b", subject="GPU1")])
    results = run_checks([c], Ctx())
    assert [(r.subject, r.status) for r in results] == [("GPU0", Status.PASS), ("GPU1", Status.WARN)]


def test_select_by_glob_tag_and_skip():
    a = make("gpu.ecc", lambda c: ok(""), tags=["gate"])
    b = make("gpu.clocks", lambda c: ok(""))
    d = make("memory.swap", lambda c: ok(""), tags=["gate"])
    assert select([a, b, d], only=["gpu.*"]) == [a, b]
    assert select([a, b, d], tags=["gate"]) == [a, d]
    assert select([a, b, d], skip_ids=["gpu.e*"]) == [b, d]


def test_overall_is_nagios_like():
    def res(status):
        return run_checks([make("x", lambda c: __import__("gpunode.audit.engine").audit.engine.Finding(status, ""))], Ctx())

    assert overall(res(Status.PASS) + res(Status.SKIP)) == "OK"
    assert overall(res(Status.WARN)) == "WARN"
    assert overall(res(Status.WARN) + res(Status.ERROR)) == "UNKNOWN"
    assert overall(res(Status.ERROR) + res(Status.FAIL)) == "FAIL"


def test_invalid_severity_is_refused():
    import pytest

    with pytest.raises(ValueError):
        Check("x", "x", "a", lambda c: None, severity="fatal")


def test_a_malformed_return_is_an_error_of_that_check_only():
    """A check that returns something other than findings (or fails half-way through a
    generator) is judged ERROR; the run goes on and the next check's result stands."""

    @check("t.stray", "returns None in a list", area="t")
    def stray(ctx):
        return [ok("a"), None]

    @check("t.text", "returns a string", area="t")
    def text(ctx):
        return "oops"

    @check("t.gen", "a generator that raises half-way", area="t")
    def gen(ctx):
        yield ok("first")
        raise RuntimeError("second subject unreadable")

    @check("t.ok", "fine", area="t")
    def fine(ctx):
        return ok("fine")

    results = run_checks([stray, text, gen, fine], Ctx())
    assert [(r.id, r.status) for r in results] == [("t.stray", Status.ERROR), ("t.text", Status.ERROR),
                                                  ("t.gen", Status.ERROR), ("t.ok", Status.PASS)]
    assert "not a finding" in results[0].message and "second subject unreadable" in results[2].message


def test_the_gate_imports_every_module_that_holds_a_gate_check():
    """The gate imports only GATE_MODULES: a gate check in another module would be dropped."""
    import importlib

    from gpunode.audit.run import choose_checks
    from gpunode.checks import AREA_MODULES, GATE_MODULES, all_checks
    from gpunode.tune.profiles import load_profile

    for name in AREA_MODULES:
        module = importlib.import_module(f"gpunode.checks.{name}")
        gated = [v.id for v in vars(module).values() if isinstance(v, Check) and "gate" in v.tags]
        assert bool(gated) == (name in GATE_MODULES), (name, gated)
    for profile_name in ("training", "inference"):
        profile = load_profile(profile_name)
        everything = [c.id for c in all_checks(profile) if "gate" in c.tags]
        assert [c.id for c in choose_checks(profile, tags=["gate"])] == everything
        assert len(everything) >= 14
