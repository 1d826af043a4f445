import sys
import time

from gpunode.host.runner import NOT_FOUND_RC, RecordingRunner, ReplayRunner, Runner


def test_runs_argv_and_captures_output():
    result = Runner().run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"])
    assert result.rc == 3 and result.stdout == "out\n" and result.stderr == "err\n"
    assert not result.ok and not result.timed_out


def test_missing_command_is_127_not_an_exception():
    result = Runner().run(["/nonexistent/gpunode-test-binary"])
    assert result.rc == NOT_FOUND_RC and "not found" in result.error


def test_shell_metacharacters_are_not_interpreted(tmp_path):
    marker = tmp_path / "pwned"
    result = Runner().run(["echo", f"x; touch {marker}"])
    assert result.ok and result.stdout.strip() == f"x; touch {marker}"
    assert not marker.exists()


def test_timeout_kills_the_whole_process_group():
    code = "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(30)']); time.sleep(30)"
    started = time.monotonic()
    result = Runner().run([sys.executable, "-c", code], timeout=0.5)
    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 5  # the grandchild holding the pipes was killed too


def test_record_and_replay(tmp_path):
    rec = RecordingRunner()
    rec.run(["echo", "hello"])
    rec.save(tmp_path / "commands.json")
    replay = ReplayRunner.load(tmp_path / "commands.json")
    assert replay.run(["echo", "hello"]).stdout == "hello\n"
    assert replay.run(["echo", "other"]).rc == NOT_FOUND_RC
    assert replay.calls == [["echo", "hello"], ["echo", "other"]]
