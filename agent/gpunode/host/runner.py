"""Runner: the only place that starts processes.

argv lists only (never a shell string), a timeout on every call, output captured, and on a
timeout the whole process group is killed so that children (mpirun, nccl-tests) die too.
A stream (Runner.stream: `journalctl -f` for the watcher) has no timeout by nature: its
output comes as bounded lines, read without blocking, and stop() kills its process group.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpunode.host.debug import debug

NOT_FOUND_RC = 127
LINE_MAX = 65536  # a longer line is dropped: no record of the kernel log comes near it


@dataclass
class CommandResult:
    """What one command did: exit code, output, and why it could not run or timed out."""

    argv: list[str]
    rc: int
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    error: str | None = None  # why it could not run at all (not found, permission)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and self.error is None


def _key(argv: Sequence[str]) -> str:
    return json.dumps(list(argv))


class Runner:
    """Runs real processes."""

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        input_text: str | None = None,
    ) -> CommandResult:
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        debug("run: %s (timeout %gs)", shlex.join(argv), timeout)  # `gpunode --debug`
        started = time.monotonic()
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                argv,
                stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(argv, NOT_FOUND_RC, error=f"{argv[0]}: command not found")
        except OSError as exc:
            return CommandResult(argv, 126, error=f"{argv[0]}: {exc.strerror or exc}")
        try:
            out, err = proc.communicate(input=input_text, timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
        return CommandResult(
            argv,
            proc.returncode if not timed_out else -signal.SIGKILL,
            out or "",
            err or "",
            round(time.monotonic() - started, 4),
            timed_out,
        )


    def stream(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
               line_max: int = LINE_MAX) -> Stream:
        """Start a long-running command (e.g. `journalctl -k -f`) whose stdout is read as it
        comes, in lines of at most line_max bytes. OSError when it cannot start."""
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        debug("stream: %s", shlex.join(argv))
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None, start_new_session=True)
        return Stream(proc, line_max)



class LineReader:
    """Complete lines from a non-blocking fd (a pipe, /dev/kmsg), without their newline. A line
    longer than line_max is dropped up to its end (counted in `dropped`); a partial line waits
    for the rest. EPIPE (/dev/kmsg: the ring overwrote records not yet read) is counted in
    `overwritten` and reading goes on from the oldest record still there."""

    def __init__(self, fd: int, line_max: int = LINE_MAX) -> None:
        self.fd, self.line_max = fd, line_max
        self.eof = False
        self.dropped = 0
        self.overwritten = 0
        self._buffer = b""
        self._skipping = False  # inside a line that was too long: drop up to its newline

    def read_lines(self) -> list[bytes]:
        """Every complete line readable now; `eof` when the writer is gone."""
        lines: list[bytes] = []
        self.eof = False
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return lines
            except BrokenPipeError:
                self.overwritten += 1
                continue
            if not chunk:
                self.eof = True
                return lines
            lines += self._split(chunk)

    def _split(self, chunk: bytes) -> list[bytes]:
        *complete, rest = (self._buffer + chunk).split(b"\n")
        if self._skipping and complete:  # the end of the line that was too long
            complete.pop(0)
            self._skipping = False
        if len(rest) > self.line_max:
            self.dropped += 1
            rest, self._skipping = b"", True
        self._buffer = b"" if self._skipping else rest
        kept = [line for line in complete if len(line) <= self.line_max]
        self.dropped += len(complete) - len(kept)
        return kept


class Stream:
    """A command started by Runner.stream: `fd` to wait on (select), read_lines() what it wrote,
    `returncode` once it has ended (None while it runs), stop() to end it. Its stderr is kept
    (the last 4 KiB) to say why it ended."""

    def __init__(self, proc: subprocess.Popen, line_max: int = LINE_MAX) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        os.set_blocking(proc.stdout.fileno(), False)
        os.set_blocking(proc.stderr.fileno(), False)
        self.out = LineReader(proc.stdout.fileno(), line_max)
        self._errors = LineReader(proc.stderr.fileno(), 4096)
        self._stderr: list[str] = []

    @property
    def fd(self) -> int:
        return self.out.fd

    @property
    def eof(self) -> bool:
        return self.out.eof

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def read_lines(self) -> list[str]:
        self._keep_stderr()
        return [line.decode("utf-8", "replace") for line in self.out.read_lines()]

    def _keep_stderr(self) -> None:
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self._stderr = (self._stderr + [e.decode("utf-8", "replace") for e in self._errors.read_lines()])[-20:]

    def stderr(self) -> str:
        self._keep_stderr()
        return " ".join(" ".join(self._stderr).split())[-4096:]

    def stop(self, timeout: float = 5.0) -> int | None:
        """End the command (its process group) if it still runs; -> its exit code."""
        if self.proc.stdout is not None and self.proc.stdout.closed:
            return self.proc.returncode  # stopped already
        if self.proc.poll() is None:
            _kill_group(self.proc)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._keep_stderr()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class RecordingRunner(Runner):
    """Runs for real and keeps every result, for `gpunode snapshot`."""

    def __init__(self) -> None:
        self.recorded: dict[str, CommandResult] = {}

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None) -> CommandResult:
        result = super().run(argv, timeout=timeout, env=env, cwd=cwd, input_text=input_text)
        self.recorded[_key(result.argv)] = result
        return result

    def save(self, path: Path) -> None:
        from gpunode.outputs import write_atomic  # the one writer of output files

        data = [asdict(r) for r in self.recorded.values()]
        write_atomic(path, json.dumps(data, indent=1) + "\n", mode=0o600)


@dataclass
class ReplayRunner(Runner):
    """Answers from recorded results; an unrecorded command reads as 'not found'."""

    results: dict[str, CommandResult] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def add(self, argv: Sequence[str], rc: int = 0, stdout: str = "", stderr: str = "", **kw) -> None:
        self.results[_key(argv)] = CommandResult(list(argv), rc, stdout, stderr, **kw)

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None) -> CommandResult:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        found = self.results.get(_key(argv))
        if found is None:
            return CommandResult(argv, NOT_FOUND_RC, error=f"{argv[0]}: not recorded in this snapshot")
        return found

    @classmethod
    def load(cls, path: Path) -> ReplayRunner:
        runner = cls()
        if path.exists():
            for result in load_commands(path):
                runner.results[_key(result.argv)] = result
        return runner


_RESULT_TYPES = {
    "argv": (list,), "rc": (int,), "stdout": (str,), "stderr": (str,), "duration_s": (int, float),
    "timed_out": (bool,), "error": (str, type(None)),
}


def load_commands(path: Path) -> list:
    """commands.json (ReplayRunner.load): CommandResults with every field type-checked."""
    from gpunode.inputs import MAX_RECORDED_BYTES, InputError, load_json

    data = load_json(path, max_bytes=MAX_RECORDED_BYTES)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of recorded commands")
    results = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "argv" not in item or "rc" not in item:
            raise InputError(f"{path}: [{i}]: expected an object with argv and rc")
        for key, value in item.items():
            types = _RESULT_TYPES.get(key)
            if types is None:
                raise InputError(f"{path}: [{i}].{key}: unknown field")
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise InputError(f"{path}: [{i}].{key}: wrong type ({type(value).__name__})")
        if not item["argv"] or not all(isinstance(a, str) for a in item["argv"]):
            raise InputError(f"{path}: [{i}].argv: expected a non-empty list of strings")
        results.append(CommandResult(**item))
    return results
