"""What the server engines (PostgreSQL, MySQL/MariaDB, MongoDB) do alike, written once.

- :func:`resolve_password`: which password wins when several places give one.
- :func:`password_sources`: how the engines' hints name those places (``run-task`` swaps the
  phrase for the Secret a Job wired: :data:`PASSWORD_SOURCES`).
- :func:`url_password_warning`: what to say when a target URL carries a password.
- :func:`retry_transient`: call again, with backoff, after a failure marked ``transient``.
- :func:`run_parallel`: one task per table/collection on ``--jobs`` threads, first failure wins.
- :func:`read_ahead`: a producer's items made on a thread of their own, a few ahead of use.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from safehold.engines.base import Abandoned
from safehold.retry import DEFAULT_POLICY, not_yet_retried, retry_call

log = logging.getLogger("safehold.engines")
T = TypeVar("T")
R = TypeVar("R")


# Any phrase password_sources() writes; `safehold run-task` replaces it with what the operator
# wired (e.g. "the BackupTarget's connection.passwordSecretRef (Secret orders-db, key password)").
PASSWORD_SOURCES = re.compile(r"(?:the URL, )?--password-file(?:, | or )SAFEHOLD_PASSWORD"
                              r"(?: or [A-Z_]+)?")


def password_sources(client_var: str | None = None, *, url: bool = False) -> str:
    """Where a command-line user puts the password, for error hints:
    ``--password-file, SAFEHOLD_PASSWORD or PGPASSWORD`` (matched by PASSWORD_SOURCES)."""
    places = (["the URL"] if url else []) + ["--password-file", "SAFEHOLD_PASSWORD"] \
        + ([client_var] if client_var else [])
    return ", ".join(places[:-1]) + " or " + places[-1]


def resolve_password(explicit: str | None, in_url: str | None, env_var: str | None = None
                     ) -> str | None:
    """The password to log in with, most explicit first: ``explicit`` (``--password-file`` or
    ``SAFEHOLD_PASSWORD``, i.e. ``ConnectionOptions.password``), then ``in_url`` (the URL's
    still percent-encoded password), then the client's own variable ``env_var`` (PGPASSWORD).
    """
    if explicit is not None:
        return explicit
    if in_url is not None:
        return unquote(in_url)
    return os.environ.get(env_var) if env_var else None


def url_password_warning(url: str, *, config_name: str | None = None) -> str | None:
    """A warning for a target ``url`` that holds a password, else None.

    On a command line the password is visible to every user of the machine (``ps``,
    ``/proc/PID/cmdline``) and stays in shell history; in the config file it sits in clear
    text beside everything else. ``config_name`` is the config file's name for the target.
    """
    try:
        password = urlsplit(url).password
    except ValueError:
        return None  # the engine's own parser explains what is wrong with the URL
    if not password:
        return None
    safer = ("--password-file FILE, SAFEHOLD_PASSWORD, or the client's own convention"
             " (PGPASSWORD or ~/.pgpass, MYSQL_PWD)")
    if config_name is not None:
        return (f"target {config_name!r} in the config file has its password in the URL;"
                f" move it to password_file: FILE in the config, or use {safer}")
    return ("the target URL holds a password, which every user of this machine can read in"
            " the process list (ps, /proc) and which stays in your shell history; remove it"
            f" from the URL and use {safer}")


def retry_transient(fn: Callable[[], T], what: str, *, attempts: int = 3) -> T:
    """Call ``fn``; after a failure whose ``transient`` flag is set (refused or timed-out
    connections, dropped sessions), log it and call again with the runner's one backoff policy
    (:mod:`safehold.retry`), ``attempts`` times in all. A storage error escaping a ``sink.put``
    inside ``fn`` had its retries in the storage layer and is raised at once, as is any other
    failure and the last transient one."""
    return retry_call(fn, what=what, policy=replace(DEFAULT_POLICY, attempts=attempts),
                      retry_if=not_yet_retried)


def run_parallel(fn: Callable[[T], R], items: Iterable[T], *, jobs: int, name: str,
                 on_failure: Callable[[], None] | None = None) -> list[R]:
    """``fn`` over ``items`` on ``jobs`` threads (named ``name``); the results in item order.

    The first failure calls ``on_failure`` (which tells running tasks to give up: kill their
    client processes, set their stop event), cancels the tasks not yet started, waits for the
    running ones to end, and is raised; a backup or restore is never left half-running behind.
    A task that gave up first, told by the failing one before that one's own failure was done,
    raises :class:`Abandoned`: the failure that made it give up is raised instead.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name)
    try:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            if on_failure is not None:
                on_failure()
            for f in futures:
                f.cancel()
            wait(futures)
            exc = failed.exception()
            while isinstance(exc, Abandoned):
                exc = exc.cause
            raise exc  # type: ignore[misc]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_ITEM, _END, _FAILED = range(3)


def read_ahead(items: Iterator[T], *, name: str, depth: int = 2) -> Iterator[T]:
    """``items``, produced on a thread of their own (named ``name``) up to ``depth`` ahead of
    the consumer: a reader that waits for its database between items (a query, its answer)
    then waits while the consumer works, not both in turn.

    ``items`` is iterated on that thread only (its connection too, until it ends). Its
    failure is raised to the consumer. When the consumer stops early, the thread stops at its
    next item and closes ``items``, and the consumer waits for that (the connection is free
    again, or closed, when this generator ends).
    """
    made: queue.Queue[tuple[int, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def offer(kind: int, value: Any) -> bool:
        while not stop.is_set():
            try:
                made.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(_ITEM, item):
                    return
            offer(_END, None)
        except BaseException as exc:  # handed to the consumer, who raises it
            offer(_FAILED, exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = made.get()
            if kind == _ITEM:
                yield value
            elif kind == _FAILED:
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join()
