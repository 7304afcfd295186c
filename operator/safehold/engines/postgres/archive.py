"""Reading pg_dump archives back out of a backup with pg_restore, streaming from the repository.

pg_restore reads a custom-format archive sequentially from its stdin, so objects flow from
storage through decryption and decompression into it without a local copy. A stream can also be
restored in a chosen order (``-L``) as long as the entries with data keep the archive's order:
a data archive is, with its tables' indexes between them (:meth:`Archives.load`). Parallel
restore (``-j``) and several ``-L`` passes over one archive need a file: only the small
schema-only post-data archive is written to a temporary file for those.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.api.manifest import Manifest
from safehold.engines.base import ChainReader
from safehold.engines.postgres import quote
from safehold.engines.postgres.conn import PgTarget
from safehold.engines.postgres.procs import Feeder, ProcessSet, Tool
from safehold.engines.postgres.toclist import Entry, parse_listing
from safehold.engines.postgres.tools import ClientTools

# pg_restore 17 and newer commit every TRANSACTION_SIZE objects (--transaction-size) instead of
# after each statement: one WAL flush per batch rather than one per CREATE, COPY, ALTER and index
# (200 tables, fsync on: 2.64-3.23 s -> 2.40-2.89 s in alternating pairs), while the locks one
# transaction holds stay bounded (one transaction over a large schema runs out of
# max_locks_per_transaction). Only the whole-database restore loads this way: into a staging
# database that any failure drops.
TRANSACTION_SIZE = 1000


def batching(major: int) -> list[str]:
    """pg_restore's options for committing in batches, where its major ``major`` has them."""
    return [f"--transaction-size={TRANSACTION_SIZE}"] if major >= 17 else []


# pg_restore 17 and newer open every connection with this, which a server before 17 refuses
# ("unrecognized configuration parameter"); pg_restore has no option to leave it out.
OLD_SERVER_SETTING = "SET transaction_timeout = 0;"


def only_old_server_setting(stderr: str) -> bool:
    """Whether every error in a pg_restore's (English) ``stderr`` is a server before 17
    refusing :data:`OLD_SERVER_SETTING`, and pg_restore went on past them to the end: the
    restore itself succeeded. (``pg_restore -j`` reports a worker's error twice but counts it
    once in its closing "errors ignored" line.)"""
    errors = stderr.count("pg_restore: error: ")
    ignored = re.search(r"^pg_restore: warning: errors ignored on restore: (\d+)$", stderr,
                        re.MULTILINE)
    return errors > 0 and errors == stderr.count(f"\nCommand was: {OLD_SERVER_SETTING}") \
        and errors == stderr.count("pg_restore: error: could not execute query: ") \
        and ignored is not None and 0 < int(ignored[1]) <= errors


def conninfo(database: str) -> str:
    """A ``-d`` argument naming just the database (host, user, password come from the env);
    a conninfo string, so a database name containing ``=`` is not taken for one."""
    return "dbname=" + quote.conninfo_value(database)


@dataclass
class Spool:
    """A schema archive being written to a temporary file and listed (:meth:`Archives.spooled`)."""

    path: str
    listing: Future[list[Entry]]

    def entries(self) -> list[Entry]:
        """The archive's entries, once it is written and listed; its failure, if it failed."""
        return self.listing.result()


@dataclass
class Archives:
    """The archives of one backup and the tools to read them."""

    target: PgTarget
    tools: ClientTools
    manifest: Manifest
    reader: ChainReader
    no_owner: bool = False
    procs: ProcessSet = field(default_factory=ProcessSet)
    server_major: int = 0  # of the server restored into; 0: not known (as new as the tools)

    @property
    def loading(self) -> list[str]:
        """pg_restore's options for loading a database, and with them :meth:`_tolerate`.

        ``--exit-on-error`` and :func:`batching`, except where pg_restore is 17 or newer and
        the server older: then the first statement of each of its connections
        (:data:`OLD_SERVER_SETTING`) fails. It runs before any transaction, so pg_restore goes
        on when neither option is given (``--transaction-size`` implies ``--exit-on-error``);
        it exits 1 at the end, and the restore counts as done only when that was its only
        error (:func:`only_old_server_setting`). Any other error still fails the restore, once
        pg_restore has finished. Every object then commits on its own, as with pg_restore 16
        and older."""
        if self._old_server:
            return []
        return ["--exit-on-error", *batching(self.tools.major)]

    @property
    def _old_server(self) -> bool:
        return self.tools.major >= 17 and 0 < self.server_major < 17

    @property
    def _tolerate(self) -> Callable[[str], bool] | None:
        return only_old_server_setting if self._old_server else None

    def _pg_restore(self, args: Sequence[str], doing: str, target: PgTarget | None = None,
                    *, stdout: bool = False, loads: bool = False) -> Tool:
        argv = [self.tools.path("pg_restore"), "--no-password", *args]
        if self.no_owner:
            argv.append("--no-owner")
        return self.procs.start(argv, target or self.target, doing, stdin=True, stdout=stdout,
                                tolerate=self._tolerate if loads else None)

    def listing(self, name: str) -> list[Entry]:
        """The entries of archive ``name`` (pg_restore reads only the archive's header)."""
        return self._list_head(self.reader.open(self.manifest, name, head=True), name)

    def _list_head(self, blocks: Iterable[bytes], name: str) -> list[Entry]:
        tool = self._pg_restore(["--list"], f"listing {name}", stdout=True)
        # Nothing is applied from a listing, so the object is not read to its end here.
        with _fed(tool, blocks, drain=False):
            out = b"".join(tool.stdout_blocks())
        return parse_listing(out.decode("utf-8", "replace"))

    def load(self, name: str, database: str,
             choose: Callable[[list[Entry]], list[str]] | None = None,
             ready: Callable[[], object] | None = None) -> None:
        """Restore archive ``name`` into ``database`` (a staging database: see
        :data:`TRANSACTION_SIZE`), streaming: whole, or the ``pg_restore -l`` lines that
        ``choose`` picks from its listing, in their order (which must keep the archive's order
        of its entries with data: a stream is read once). The listing reads the object's first
        blocks, which are then kept and fed to the restore: the object is read once.

        ``ready``, if given, is called after the listing and before anything is loaded; it
        returns once ``database`` may be loaded (its tables exist) and raises if it never will.
        So an archive is listed while the server still creates the tables it fills."""
        stream = iter(self.reader.open(self.manifest, name))
        lines: list[str] | None = None
        head: list[bytes] = []
        if choose is not None:
            def recorded() -> Iterator[bytes]:
                for block in stream:
                    head.append(block)
                    yield block

            lines = choose(self._list_head(recorded(), name))
        if ready is not None:
            ready()
        with _list_file(lines) if lines is not None else contextlib.nullcontext() as listfile:
            tool = self._pg_restore([*self.loading,
                                     *([f"--use-list={listfile}"] if listfile else []),
                                     f"--dbname={conninfo(database)}"],
                                    f"restoring {name}", self.target.staging(database),
                                    loads=True)
            self._run(tool, itertools.chain(head, stream))

    @contextlib.contextmanager
    def spooled(self, name: str, *, dependencies: bool = False) -> Iterator[Spool]:
        """Archive ``name`` in a temporary file, removed on exit: ``pg_restore -j`` needs a
        seekable archive, and several ``pg_restore -L`` read one. Only for schema archives
        (small): data archives stream. The file is written and listed (with each entry's
        ``dependencies``, if asked) in a thread of its own while the caller goes on (a whole
        restore creates its staging database meanwhile); :meth:`Spool.entries` waits for it.
        Exit waits for the thread."""
        fd, path = tempfile.mkstemp(prefix="safehold-pg-", suffix=".archive")

        def fill() -> list[Entry]:
            with os.fdopen(fd, "wb") as f:
                for block in self.reader.open(self.manifest, name):
                    f.write(block)
            return self.list_file(path, name, dependencies=dependencies)

        try:
            with ThreadPoolExecutor(1, thread_name_prefix="safehold-spool") as pool:
                yield Spool(path, pool.submit(fill))
        finally:
            os.unlink(path)

    def list_file(self, path: str, name: str, *, dependencies: bool = False) -> list[Entry]:
        """The entries of a spooled archive (of object ``name``), with their dependencies
        if asked (``pg_restore --list --verbose``)."""
        tool = self.procs.start([self.tools.path("pg_restore"), "--list",
                                 *(["--verbose"] if dependencies else []), path], self.target,
                                f"listing {name}", stdout=True)
        out = b"".join(tool.stdout_blocks())
        tool.wait()
        return parse_listing(out.decode("utf-8", "replace"))

    def load_file(self, path: str, database: str, lines: Sequence[str], *, jobs: int = 1,
                  doing: str = "restoring post-data") -> None:
        """Restore the entries ``lines`` (``pg_restore -l`` lines) of a spooled archive into
        ``database`` (a staging database, as for :meth:`load`). Into a server before 17 with
        pg_restore 17+, on one connection (:attr:`loading`): the messages of parallel workers
        may interleave on stderr, and every one of them must be read."""
        if self._old_server:
            jobs = 1
        with _list_file(lines) as listfile:
            tool = self.procs.start(
                [self.tools.path("pg_restore"), "--no-password", *self.loading,
                 f"--jobs={jobs}", f"--use-list={listfile}",
                 f"--dbname={conninfo(database)}",
                 *(["--no-owner"] if self.no_owner else []), path],
                self.target.staging(database), doing, tolerate=self._tolerate)
            tool.wait()

    def script(self, name: str, lines: Sequence[str]) -> Iterator[bytes]:
        """The SQL script of the chosen entries of archive ``name`` (``pg_restore -L -f -``),
        generated lazily: pg_restore starts when the first block is wanted."""
        with _list_file(lines) as listfile:
            tool = self._pg_restore([f"--use-list={listfile}", "--file=-"],
                                    f"reading {name}", stdout=True)
            with _fed(tool, self.reader.open(self.manifest, name)):
                yield from tool.stdout_blocks()

    def _run(self, tool: Tool, blocks: Iterable[bytes]) -> None:
        with _fed(tool, blocks):
            tool.wait()


@contextlib.contextmanager
def _fed(tool: Tool, blocks: Iterable[bytes], *, drain: bool = True) -> Iterator[None]:
    """``blocks`` streamed into ``tool`` (:class:`.procs.Feeder`) while the body reads or waits
    for the tool. If the body fails, the tool is killed and the feeder's own failure, if any,
    is raised first: a damaged object is the cause, not pg_restore's early EOF."""
    feeder = Feeder(tool, blocks, drain=drain)
    try:
        yield
    except BaseException:
        tool.kill()
        feeder.join()
        raise
    feeder.join()


@contextlib.contextmanager
def _list_file(lines: Sequence[str]) -> Iterator[str]:
    """A temporary ``pg_restore --use-list`` file holding ``lines``, removed on exit."""
    fd, path = tempfile.mkstemp(prefix="safehold-pg-", suffix=".list")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        yield path
    finally:
        os.unlink(path)
