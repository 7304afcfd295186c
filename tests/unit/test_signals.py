"""cli/signals.py: a SIGTERM whose exception a finalizer swallowed still stops the command.

Each case runs in its own interpreter: signal handlers and ``sys.unraisablehook`` are the
process's, and the case ends it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from safehold.api.errors import Exit

# An object whose finalizer receives the signal: it is sent from inside ``__del__`` and the
# handler runs at the finalizer's next bytecode, so the exception it raises is swallowed
# (Python prints "Exception ignored in ..."), as when a pymongo cursor is collected at the
# moment SIGTERM arrives. The command then waits 20 s: a lost signal lets it finish.
FINALIZED = """
import os, signal, time

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # the handler runs here, inside the finalizer

def work():
    Finalized()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.01)
    print("the signal was lost", flush=True)
"""


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", FINALIZED + textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=60)


def test_the_cli_stops_on_a_sigterm_a_finalizer_swallowed() -> None:
    done = run("""
        from safehold.cli.main import cli

        @cli.command("work")
        def work_command():
            work()

        cli.main(["work"])
    """)
    assert "the signal was lost" not in done.stdout
    assert done.returncode == int(Exit.TERMINATED), done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr  # caught, not printed as a lost exception


def test_a_streamers_second_sigterm_is_sent_again_too() -> None:
    # `wal stream`: the first SIGTERM asks the streamer to stop, a second one unwinds
    done = run("""
        import signal
        from safehold.cli.errors import Terminated
        from safehold.cli.wal_cmds import _stop_on_sigterm

        with _stop_on_sigterm(lambda: None) as stopped:
            signal.raise_signal(signal.SIGTERM)
            assert stopped.is_set()
            try:
                work()
            except Terminated:
                print("terminated", flush=True)
    """)
    assert done.stdout == "terminated\n", done.stdout + done.stderr


def test_other_unraisable_exceptions_are_still_printed() -> None:
    done = run("""
        import signal
        from safehold.cli import signals

        class Broken:
            def __del__(self):
                raise ValueError("a finalizer's own error")

        with signals.handling(signal.SIGTERM, lambda signum, frame: None):
            Broken()
        print("went on", flush=True)
    """)
    assert done.stdout == "went on\n"
    assert "Exception ignored" in done.stderr and "a finalizer's own error" in done.stderr


def test_a_signal_swallowed_as_the_command_ends_is_not_sent_again() -> None:
    # the handler is gone by the time of the resend: the default action would kill the process
    done = run("""
        import signal, time
        from safehold.cli import signals
        from safehold.cli.errors import Terminated

        def handler(signum, frame):
            raise Terminated()

        with signals.handling(signal.SIGTERM, handler):
            Finalized()
        time.sleep(5 * signals.RESEND_AFTER)
        print("ended normally", flush=True)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ended normally\n"


def test_the_hook_is_undone_with_the_handler() -> None:
    done = run("""
        import signal, sys
        from safehold.cli import signals

        def outer(signum, frame): pass
        def inner(signum, frame): pass

        before = sys.unraisablehook
        with signals.handling(signal.SIGTERM, outer):
            with signals.handling(signal.SIGTERM, inner):
                assert sys.unraisablehook is signals._unraisable
                assert signals._active[signal.SIGTERM] is inner
            assert sys.unraisablehook is signals._unraisable  # the outer one still holds
            assert signals._active[signal.SIGTERM] is outer  # and is still sent again
            assert signal.getsignal(signal.SIGTERM) is outer
        assert sys.unraisablehook is before and not signals._active
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        print("undone", flush=True)
    """)
    assert done.stdout == "undone\n", done.stderr
