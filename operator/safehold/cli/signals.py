"""Signals that stop a command as an exception, and never lost.

Python runs a signal handler in the main thread between two bytecodes, wherever it is. When
that is inside a finalizer (a ``__del__``, a weakref callback: pymongo's cursors and sessions
have them, and the oplog streamer drops a cursor on every poll), the exception the handler
raises cannot propagate: Python prints "Exception ignored in ..." and goes on as if the signal
had never come, and a streamer runs on until it is killed, its last batch never archived.
:func:`handling` installs a handler together with a hook for exactly that case: the signal is
sent again a moment later, from a thread, so that it lands outside the finalizer.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("safehold.signals")

Handler = Callable[[int, FrameType | None], Any]

RESEND_AFTER = 0.05  # seconds: the finalizer has long returned, the command barely waited

_active: dict[int, Handler] = {}  # the handlers installed by handling(), by signal
_previous_hook: Callable[[Any], object] | None = None


class SignalExit(BaseException):
    """Raised by a signal handler to stop a command. A BaseException, like KeyboardInterrupt,
    so that it unwinds past every ``except Exception`` on the way."""

    signum: int = signal.SIGTERM


@contextmanager
def handling(signum: int, handler: Handler) -> Iterator[None]:
    """``handler`` for ``signum`` while inside, the previous one restored after; a
    :class:`SignalExit` it raises that a finalizer swallows is raised again. Outside the main
    thread (where Python allows no handler) nothing changes."""
    global _previous_hook
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hooked = sys.unraisablehook is not _unraisable
    if hooked:  # not already, by an outer handling()
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    previous, outer = signal.signal(signum, handler), _active.get(signum)
    _active[signum] = handler
    try:
        yield
    finally:
        if outer is None:
            _active.pop(signum, None)
        else:  # an outer handling() of the same signal (run-task inside the CLI's)
            _active[signum] = outer
        signal.signal(signum, previous)
        if hooked and sys.unraisablehook is _unraisable:
            sys.unraisablehook = _previous_hook or sys.__unraisablehook__


def _unraisable(unraisable: Any) -> None:
    exc = unraisable.exc_value
    handler = _active.get(exc.signum) if isinstance(exc, SignalExit) else None
    if handler is None:
        (_previous_hook or sys.__unraisablehook__)(unraisable)
        return
    log.debug("%s arrived inside a finalizer (%r), which swallowed it: sent again",
              signal.Signals(exc.signum).name, unraisable.object)
    resend = threading.Timer(RESEND_AFTER, _resend, (exc.signum, handler))
    resend.daemon = True
    resend.start()


def _resend(signum: int, handler: Handler) -> None:
    if _active.get(signum) is handler:  # else the command has ended meanwhile
        os.kill(os.getpid(), signum)
