"""SIGKILL `gpunode apply` and `gpunode rollback` at random instants on a sysroot copy of the
test fixture tree, then roll back and compare the tree byte-exact (content, modes, links, and
no stray file or directory).

    python benchmarks/crash_harness.py                      # 500 apply kills + 200 rollback kills
    python benchmarks/crash_harness.py --apply 20 --rollback 10 --seed 7
    python benchmarks/crash_harness.py --apply 0 --rollback 0 --enospc 200 --sigterm 150 --sigint 150 --sighup 150
    python benchmarks/crash_harness.py --apply 0 --rollback 0 --rollback-enospc 99

gpunode's own failures during apply, each round on a fresh tree: --enospc makes one journal
write fail (every write of a full apply in turn: ENOSPC with the disk staying full, EIO at
fsync, ENOSPC that passes; tests/testhooks GPUNODE_TEST_JOURNAL_FAIL, the journal's own
os.write/os.fsync); --sigterm/--sigint send that signal at a random instant of the apply's
work; --sighup closes the apply's terminal then (it runs on a pseudo-terminal of its own, as
under ssh: the kernel sends SIGHUP and its output fails with EIO from then on). The apply must
undo itself: exit 3 (journal) or 129/130/143 (signal) with the tree byte-exact right then,
before any rollback; or, where the signal came too late, have finished. --rollback-enospc
fails one journal write of `gpunode rollback` after a full apply (each write in turn, the same
three kinds): the rollback must go on restoring, exit 3 and leave the tree byte-exact right
then, its journal unsettled until the next rollback. Every round then ends with a plain
`gpunode rollback` (settling what the journal could not record) that must exit 0 and leave the
tree byte-exact.

With --aim work (the default) the kill instant is uniform over the part of the run after the
command's journal first moved (the apply began, the rollback began: among the writes); with
--aim whole it is uniform over the whole run, start-up included (calibrated by one run without
a kill). Every file-system call of the killed process sleeps 0-2 ms after it returns
(benchmarks/crash_slowdown/sitecustomize.py, on PYTHONPATH for the harness only), so kills land
between any two calls, not only at named crash points. tests/test_apply_crash.py runs a few
rounds of the same code in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "agent"))

from apply_fixtures import make_tree, on_a_terminal, picture  # noqa: E402

APPLY_ARGS = ["--allow-reboot-settings", "--json"]
# Docker installed with a daemon.json the training profile's json settings rewrite (issue 24):
# its rollback must give back these bytes, indentation and key order included.
DOCKER_HOST = {
    "/usr/bin/dockerd": "",
    "/etc/docker/daemon.json": '{\n    "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},\n'
                               '    "default-shm-size": "64M",\n    "log-opts": {"max-size": "10m"}\n}\n',
}
# A ConnectX NIC beside the proprietary driver (no DMA-BUF): the training profile's
# module.nvidia_peermem writes /etc/modules-load.d/gpunode-nvidia_peermem.conf (issue 24 item 3).
PEERMEM_HOST = {
    "/sys/class/infiniband/mlx5_0/ports/1/state": "4: ACTIVE\n",
    "/proc/modules": "nvidia 62242816 0 - Live 0x0000000000000000 (POE)\nmlx5_ib 466944 0 - Live 0x0000000000000000\n",
    "/proc/driver/nvidia/version": "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.05  Tue Oct  8 03:22:07 UTC 2024\n",
    "/proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
    "/lib/modules/6.1.0-18-amd64/modules.dep": "kernel/net/ipv4/tcp_bbr.ko.xz:\nkernel/net/sched/sch_fq.ko.xz:\n"
                                               "updates/dkms/nvidia.ko.xz:\n"
                                               "updates/dkms/nvidia-peermem.ko.xz: updates/dkms/nvidia.ko.xz\n",
}


@dataclass
class Tally:
    rounds: int = 0
    killed_mid_run: int = 0  # the process was still running when the kill came
    journal_unfinished: int = 0  # the kill left an unfinished apply/rollback in the journal
    exact: int = 0
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"rounds": self.rounds, "killed_mid_run": self.killed_mid_run,
                "journal_unfinished": self.journal_unfinished, "byte_exact": self.exact,
                "failures": self.failures[:20]}


@dataclass
class FaultTally:
    """Rounds where apply meets its own failure (a journal write, a signal) and must undo itself."""

    rounds: int = 0
    hit: int = 0  # the fault stopped the apply (exit 3 for the journal, 128 + n for a signal)
    restored_by_apply: int = 0  # of those: the tree byte-exact right after the apply, before any rollback
    finished_first: int = 0  # a signal that came after the batch: the apply had finished (exit 0/1)
    journal_unrecorded: int = 0  # the apply said its journal could not hold all of its rollback
    exact: int = 0  # byte-exact after the settling rollback (every round)
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"rounds": self.rounds, "stopped_by_the_fault": self.hit, "restored_by_apply": self.restored_by_apply,
                "finished_before_the_signal": self.finished_first, "journal_unrecorded": self.journal_unrecorded,
                "byte_exact": self.exact, "failures": self.failures[:20]}


JOURNAL_FAULTS = ("ENOSPC:{n}", "EIO:{n}", "ENOSPC:{n}:once")  # disk stays full, fsync fails, a passing fault


class Harness:
    def __init__(self, workdir: Path, seed: int, delay_ms: float = 2.0):
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.template = make_tree(workdir / "template", {**DOCKER_HOST, **PEERMEM_HOST})
        os.chmod(self.template / "etc/default/grub", 0o640)
        self.pristine = picture(self.template)
        self.env = {k: v for k, v in os.environ.items() if k not in ("GPUNODE_STATE_DIR", "GPUNODE_TEST_CRASH_AFTER")}
        # This tree's own package first: a copy of the tree can be tested while the original changes.
        self.env["PYTHONPATH"] = str(REPO / "agent")
        self.slow_env = {**self.env, "PYTHONPATH": f"{HERE / 'crash_slowdown'}:{REPO / 'agent'}",
                         "CRASH_HARNESS_DELAY_MS": str(delay_ms), "COLUMNS": "200"}
        self.hook_env = {**self.env, "PYTHONPATH": f"{REPO / 'tests' / 'testhooks'}:{REPO / 'agent'}"}
        self.journal_writes = 0  # records one full apply journals (calibrate)
        self.rollback_writes = 0  # records its rollback adds (calibrate)
        self.n = 0

    def fresh(self) -> tuple[Path, Path]:
        self.n += 1
        root = self.workdir / f"r{self.n}"
        shutil.copytree(self.template, root, symlinks=True)
        return root, self.workdir / f"s{self.n}"

    def argv(self, verb: str, root: Path, state: Path) -> list[str]:
        extra = APPLY_ARGS if verb == "apply" else ["--json"]
        return [sys.executable, "-m", "gpunode", verb, "--sysroot", str(root), "--state-dir", str(state), *extra]

    def run(self, verb: str, root: Path, state: Path, slow: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(verb, root, state), capture_output=True, text=True, cwd=REPO,
                              env=self.slow_env if slow else self.env, timeout=300)

    def calibrate(self) -> dict[str, float]:
        """-> how long each command runs, and how long its work lasts after the journal moved."""
        root, state = self.fresh()
        times = {}
        for verb in ("apply", "rollback"):
            mark = _journal_mark(state)
            t0 = time.monotonic()
            proc = self.popen(verb, root, state)
            t_work = _wait_for_work(proc, state, mark)
            assert proc.wait() in (0, 1), f"{verb} failed in calibration"
            lines = sum(len(p.read_bytes().splitlines()) for p in state.glob("**/applies/*.jsonl"))
            if verb == "apply":
                self.journal_writes = lines
            else:
                self.rollback_writes = lines - self.journal_writes
            t_end = time.monotonic()
            times[verb] = t_end - t0
            times[f"{verb}_work"] = t_end - (t_work or t_end)
        assert picture(root) == self.pristine, "a plain apply + rollback is not byte-exact"
        shutil.rmtree(root)
        return times

    def popen(self, verb: str, root: Path, state: Path) -> subprocess.Popen:
        return subprocess.Popen(self.argv(verb, root, state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=REPO, env=self.slow_env)

    def kill_at(self, verb: str, root: Path, state: Path, delay: float, aim: str = "whole") -> bool:
        """Start the command, SIGKILL it `delay` s after it started (aim "whole") or after its
        journal first moved (aim "work": the kill lands among the writes); -> whether it was
        still running then."""
        mark = _journal_mark(state)
        proc = self.popen(verb, root, state)
        if aim == "work" and _wait_for_work(proc, state, mark) is None:
            return False  # it ended before its journal moved
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            _wait_for_orphans(root)
            return True

    def unfinished(self, state: Path) -> bool:
        from gpunode.tune.journal import StateDir

        # --sysroot applies live in their own directory below the state dir (sysroots/<key>/)
        return any(r.unfinished for d in state.rglob("applies") for r in StateDir(d.parent).records())

    def applied(self, state: Path) -> bool:
        from gpunode.tune.journal import StateDir

        return [r.status for d in state.rglob("applies") for r in StateDir(d.parent).records()] == ["applied"]

    def check(self, tally: Tally, label: str, root: Path, state: Path) -> None:
        rolled = self.run("rollback", root, state, slow=False)
        after = picture(root)
        tally.rounds += 1
        if rolled.returncode == 0 and after == self.pristine:
            tally.exact += 1
            shutil.rmtree(root)
            shutil.rmtree(state, ignore_errors=True)
            return
        diff = sorted(set(after.items()) ^ set(self.pristine.items()))[:4]
        try:
            odd = [r for r in json.loads(rolled.stdout)["restores"] if r["status"] not in ("restored", "not-written")]
        except (ValueError, KeyError):
            odd = rolled.stdout[-300:]
        tally.failures.append(f"{label}: rollback rc {rolled.returncode} {rolled.stderr.strip()[-300:]} "
                              f"restores {odd} diff {diff}")

    def apply_round(self, tally: Tally, t_apply: float, aim: str = "whole") -> None:
        root, state = self.fresh()
        delay = self.rng.uniform(0, t_apply)
        if self.kill_at("apply", root, state, delay, aim):
            tally.killed_mid_run += 1
        tally.journal_unfinished += self.unfinished(state)
        self.check(tally, f"apply killed at {delay:.3f}s ({root})", root, state)

    def rollback_round(self, tally: Tally, t_rollback: float, aim: str = "whole") -> None:
        root, state = self.fresh()
        applied = self.run("apply", root, state, slow=False)
        assert applied.returncode in (0, 1), applied.stderr
        delay = self.rng.uniform(0, t_rollback)
        if self.kill_at("rollback", root, state, delay, aim):
            tally.killed_mid_run += 1
        tally.journal_unfinished += self.unfinished(state)
        self.check(tally, f"rollback killed at {delay:.3f}s ({root})", root, state)


    def enospc_round(self, tally: FaultTally, fault: str) -> None:
        """One journal write of the apply fails (tests/testhooks: GPUNODE_TEST_JOURNAL_FAIL)."""
        root, state = self.fresh()
        proc = subprocess.run(self.argv("apply", root, state), capture_output=True, text=True, cwd=REPO,
                              env={**self.hook_env, "GPUNODE_TEST_JOURNAL_FAIL": fault}, timeout=300)
        self._judge(tally, f"apply with journal fault {fault} ({root})", root, state, proc.returncode, 3, proc.stderr)

    def rollback_enospc_round(self, tally: FaultTally, fault: str) -> None:
        """One journal write of `gpunode rollback` fails, after a full apply."""
        root, state = self.fresh()
        applied = self.run("apply", root, state, slow=False)
        assert applied.returncode in (0, 1), applied.stderr
        proc = subprocess.run(self.argv("rollback", root, state), capture_output=True, text=True, cwd=REPO,
                              env={**self.hook_env, "GPUNODE_TEST_JOURNAL_FAIL": fault}, timeout=300)
        self._judge(tally, f"rollback with journal fault {fault} ({root})", root, state, proc.returncode, 3,
                    proc.stderr)

    def signal_round(self, tally: FaultTally, signum: int, t_work: float) -> None:
        """SIGTERM or SIGINT at a uniform instant of the apply's work (after its journal moved)."""
        root, state = self.fresh()
        delay = self.rng.uniform(0, t_work)
        mark = _journal_mark(state)
        proc = subprocess.Popen(self.argv("apply", root, state), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, cwd=REPO, env=self.slow_env)
        if _wait_for_work(proc, state, mark) is not None:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=300)
        _wait_for_orphans(root)
        label = f"{signal.Signals(signum).name} at {delay:.3f}s of the work ({root})"
        self._judge(tally, label, root, state, proc.returncode, 128 + signum, stderr)

    def hangup_round(self, tally: FaultTally, t_work: float) -> None:
        """The operator's terminal closes at a uniform instant of the apply's work (SIGHUP for real)."""
        root, state = self.fresh()
        delay = self.rng.uniform(0, t_work)
        mark = _journal_mark(state)
        proc, terminal = on_a_terminal(self.argv("apply", root, state), self.slow_env, REPO)
        try:
            if _wait_for_work(proc, state, mark) is not None:
                _hold_terminal(terminal, proc, delay)
        finally:
            os.close(terminal)  # a hang-up if the apply still runs
        proc.wait(timeout=300)
        _wait_for_orphans(root)
        label = f"terminal closed at {delay:.3f}s of the work ({root})"
        self._judge(tally, label, root, state, proc.returncode, 128 + signal.SIGHUP, "")

    def _judge(self, tally: FaultTally, label: str, root: Path, state: Path, rc: int, stopped: int,
               stderr: str) -> None:
        if rc == stopped:
            tally.hit += 1
            now = picture(root)
            if now == self.pristine:
                tally.restored_by_apply += 1
            else:
                diff = sorted(set(now.items()) ^ set(self.pristine.items()))[:4]
                tally.failures.append(f"{label}: exit {rc} but the tree differs right after the apply: {diff}; "
                                      f"{stderr.strip()[-300:]}")
            tally.journal_unrecorded += "could not record" in stderr
        elif rc in (0, 1) or (rc == 128 - stopped and self.applied(state)):
            tally.finished_first += 1  # -n: the batch had ended (journaled as applied), the report had not
        else:
            tally.failures.append(f"{label}: apply exit {rc}, wanted {stopped} (or 0/1: finished first); "
                                  f"{stderr.strip()[-300:]}")
        self.check(tally, label, root, state)  # settles the journal; every round must end byte-exact


def journal_fault_schedule(writes: int, rounds: int) -> list[str]:
    """Each kind of fault at every journal write of one apply, in turn; fewer rounds than that
    take evenly spaced ones (first and last write included)."""
    every = [f.format(n=n) for f in JOURNAL_FAULTS for n in range(1, writes + 1)]
    if rounds >= len(every):
        return [every[i % len(every)] for i in range(rounds)]
    if rounds <= 1:
        return every[:rounds]
    return [every[round(i * (len(every) - 1) / (rounds - 1))] for i in range(rounds)]


def _journal_mark(state: Path) -> int:
    """The total size of the journals: it grows when an apply or rollback begins its work."""
    return sum(p.stat().st_size for p in state.glob("**/applies/*.jsonl"))  # --sysroot ones: sysroots/<key>/


def _wait_for_work(proc: subprocess.Popen, state: Path, mark: int) -> float | None:
    """Poll (1 ms) until the journal grew past `mark`: -> that instant, None if the process ended first."""
    while proc.poll() is None:
        try:
            if _journal_mark(state) > mark:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.001)
    return None


def _hold_terminal(terminal: int, proc: subprocess.Popen, seconds: float) -> None:
    """Keep the terminal open (reading what the process writes, so that it never blocks on a
    full terminal) for `seconds` or until the process ends."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([terminal], [], [], min(0.01, max(deadline - time.monotonic(), 0)))[0]:
            try:
                os.read(terminal, 65536)
            except OSError:  # EIO: nothing holds the other side open any more
                return


def _wait_for_orphans(root: Path, limit_s: float = 30) -> None:
    """A killed gpunode leaves its children running (the Runner starts them in their own
    session, e.g. `systemctl --root=ROOT enable`); a later rollback on a real host comes long
    after they finished, so wait for them here too."""
    needle = str(root).encode()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        busy = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline:  # the killed gpunode is reaped: anything naming the root is its child
                busy = True
                break
        if not busy:
            return
        time.sleep(0.01)


def run(apply_rounds: int, rollback_rounds: int, seed: int, workdir: Path | None = None,
        delay_ms: float = 2.0, progress: bool = False, aim: str = "whole", enospc: int = 0, sigterm: int = 0,
        sigint: int = 0, sighup: int = 0, rollback_enospc: int = 0) -> dict:
    """aim "whole": the kill instant is uniform over the command's whole run (start-up included);
    "work": uniform over the part after its journal first moved (among the writes). enospc,
    sigterm, sigint, sighup: rounds of each of apply's own failures; rollback_enospc: of rollback's
    (the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="gpunode-crash-", dir=workdir) as tmp:
        harness = Harness(Path(tmp), seed, delay_ms)
        times = harness.calibrate()
        span = {verb: times[verb if aim == "whole" else f"{verb}_work"] for verb in ("apply", "rollback")}
        tallies = {"apply": Tally(), "rollback": Tally()}
        started = time.monotonic()
        for i in range(apply_rounds):
            harness.apply_round(tallies["apply"], span["apply"], aim)
            if progress and (i + 1) % 25 == 0:
                print(f"apply {i + 1}/{apply_rounds}: {tallies['apply'].to_json()}", file=sys.stderr, flush=True)
        for i in range(rollback_rounds):
            harness.rollback_round(tallies["rollback"], span["rollback"], aim)
            if progress and (i + 1) % 25 == 0:
                print(f"rollback {i + 1}/{rollback_rounds}: {tallies['rollback'].to_json()}", file=sys.stderr,
                      flush=True)
        faults = {"enospc": FaultTally(), "sigterm": FaultTally(), "sigint": FaultTally(), "sighup": FaultTally(),
                  "rollback_enospc": FaultTally()}
        schedule = journal_fault_schedule(harness.journal_writes, enospc)
        for i, fault in enumerate(schedule):
            harness.enospc_round(faults["enospc"], fault)
            if progress and (i + 1) % 25 == 0:
                print(f"enospc {i + 1}/{enospc}: {faults['enospc'].to_json()}", file=sys.stderr, flush=True)
        for name, signum, rounds in (("sigterm", signal.SIGTERM, sigterm), ("sigint", signal.SIGINT, sigint)):
            for i in range(rounds):
                harness.signal_round(faults[name], signum, times["apply_work"])
                if progress and (i + 1) % 25 == 0:
                    print(f"{name} {i + 1}/{rounds}: {faults[name].to_json()}", file=sys.stderr, flush=True)
        rollback_schedule = journal_fault_schedule(harness.rollback_writes, rollback_enospc)
        for i, fault in enumerate(rollback_schedule):
            harness.rollback_enospc_round(faults["rollback_enospc"], fault)
            if progress and (i + 1) % 25 == 0:
                print(f"rollback_enospc {i + 1}/{rollback_enospc}: {faults['rollback_enospc'].to_json()}",
                      file=sys.stderr, flush=True)
        for i in range(sighup):
            harness.hangup_round(faults["sighup"], times["apply_work"])
            if progress and (i + 1) % 25 == 0:
                print(f"sighup {i + 1}/{sighup}: {faults['sighup'].to_json()}", file=sys.stderr, flush=True)
        out = {"seed": seed, "aim": aim, "calibration_s": {k: round(v, 3) for k, v in times.items()},
               "wall_s": round(time.monotonic() - started, 1),
               **{k: t.to_json() for k, t in tallies.items()}}
        if enospc:
            kinds = [f.split(":")[0] + (" once" if f.endswith(":once") else "") for f in schedule]
            out["enospc"] = {**faults["enospc"].to_json(), "journal_writes_per_apply": harness.journal_writes,
                             "faults": {k: kinds.count(k) for k in dict.fromkeys(kinds)},
                             "distinct_fault_points": len(set(schedule))}
        for name in ("sigterm", "sigint", "sighup"):
            if faults[name].rounds:
                out[name] = faults[name].to_json()
        if rollback_enospc:  # restored_by_apply: by the rollback itself, before the settling one
            out["rollback_enospc"] = {**faults["rollback_enospc"].to_json(),
                                      "journal_writes_per_rollback": harness.rollback_writes,
                                      "distinct_fault_points": len(set(rollback_schedule))}
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apply", type=int, default=500, help="rounds that kill apply")
    parser.add_argument("--rollback", type=int, default=200, help="rounds that kill rollback")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--delay-ms", type=float, default=2.0, help="max sleep after each file-system call")
    parser.add_argument("--aim", choices=("whole", "work"), default="work",
                        help="kill uniformly over the whole run, or over the part after the journal moved")
    parser.add_argument("--enospc", type=int, default=0, help="rounds with a failing journal write")
    parser.add_argument("--sigterm", type=int, default=0, help="rounds that send apply SIGTERM")
    parser.add_argument("--sigint", type=int, default=0, help="rounds that send apply SIGINT")
    parser.add_argument("--sighup", type=int, default=0, help="rounds that close apply's terminal (SIGHUP)")
    parser.add_argument("--rollback-enospc", type=int, default=0, help="rounds with a failing journal write of rollback")
    args = parser.parse_args()
    result = run(args.apply, args.rollback, args.seed, delay_ms=args.delay_ms, progress=True, aim=args.aim,
                 enospc=args.enospc, sigterm=args.sigterm, sigint=args.sigint, sighup=args.sighup,
                 rollback_enospc=args.rollback_enospc)
    print(json.dumps(result, indent=1))
    ok = all(not result[k]["failures"] for k in ("apply", "rollback", "enospc", "sigterm", "sigint", "sighup",
                                                 "rollback_enospc") if k in result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
