"""``recsim``'s process exit skips the interpreter's teardown but owes what the normal exit owes:
the status ``sys.exit`` would give, the ``atexit`` handlers, buffered output, running threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _exit_with(tmp_path, body: str) -> subprocess.CompletedProcess[str]:
    head = "import atexit, sys, threading, time\nfrom recsim.cli import exit_process\n"
    script = head + textwrap.dedent(body)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered
    return subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (2, 2), (130, 130)])
def test_status_atexit_handlers_and_buffered_stdout(tmp_path, code, status):
    proc = _exit_with(
        tmp_path,
        f"""
        atexit.register(lambda: open("handler-ran", "w").write("yes"))
        print("buffered line")  # stdout is a pipe: block-buffered, not yet written
        exit_process({code!r})
        print("not reached")
        """,
    )
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == "buffered line\n"
    assert (tmp_path / "handler-ran").read_text() == "yes"


def test_a_message_goes_to_stderr_with_status_1(tmp_path):
    proc = _exit_with(tmp_path, 'exit_process("error: the reason")')
    assert proc.returncode == 1
    assert proc.stderr == "error: the reason\n"


def test_a_running_non_daemon_thread_is_waited_for(tmp_path):
    proc = _exit_with(
        tmp_path,
        """
        def late_write():
            time.sleep(0.5)
            open("thread-done", "w").write("yes")

        threading.Thread(target=late_write).start()
        exit_process(0)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "thread-done").read_text() == "yes"
