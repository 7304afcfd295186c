"""Replay binlog pieces into the destination database, and refuse what replay cannot do safely.

Every piece is decoded (and so checked: frames, MAC, hashes) into local files *before* the
database is touched. The files are then read by ``mariadb-binlog`` twice: once as text to check
what the statements in them touch, once to replay into ``mariadb`` with:

* ``--disable-log-bin`` (``SET sql_log_bin=0``): the replay is neither logged again on the
  destination nor archived again by a streamer there;
* ``--database=<source db>``: only the backed-up database's events; row events of other
  databases are left out;
* ``--rewrite-db=<source>-><scratch>``: the replay runs in the scratch database that is swapped
  into the destination afterwards (:mod:`.binlog_swap`);
* ``--start-position`` (the full's end), and ``--stop-datetime`` / ``--stop-position``.

Statement events (DDL, and DML under ``binlog_format=MIXED/STATEMENT``) are only safe when they
touch the backed-up database alone: ``--database`` filters them by their *default* database, and
``--rewrite-db`` rewrites that default database but never names inside the statement. So the
check refuses (UnsafeReplay, naming the statement and its position), before anything is
restored, when a statement: names a table in another database; runs in another database but
names the backed-up one (it would be skipped, losing its change); or names the backed-up
database at all (``db.t``, ``DROP DATABASE db``), which cannot be rewritten. Such logs can still
be replayed where touching other databases is harmless: restore into a scratch server of their
own and copy from there.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from safehold.engines.base import EngineError
from safehold.engines.mysql import binlog, tools
from safehold.engines.mysql.conn import Target
from safehold.engines.recovery import LogPiece, RecoveryTarget

log = logging.getLogger(__name__)
CLIENT = "mariadb"


class UnsafeReplay(EngineError):
    """The logs hold statements whose replay would reach beyond the destination database."""


def materialize(pieces: Sequence[LogPiece], directory: Path) -> list[Path]:
    """Write the pieces into local binlog files at their original offsets; the files in order.
    Every piece is read to its end, so every check has passed when this returns."""
    files: list[Path] = []
    for piece in pieces:
        path = directory / piece.name
        if not files or files[-1] != path:
            files.append(path)
        offset, head = int(piece.meta.get("offset", 0)), int(piece.meta.get("header", 0))
        with path.open("r+b" if path.exists() else "wb") as f:
            written = 0
            f.seek(0)
            for block in piece.open():
                if written < head:  # the header goes at the start of the file
                    take = block[: head - written]
                    f.seek(written)
                    f.write(take)
                    written += len(take)
                    block = block[len(take):]
                    if written == head:
                        f.seek(offset)
                    if not block:
                        continue
                f.write(block)
                written += len(block)
    return files


def _stop_args(to: RecoveryTarget | None) -> list[str]:
    if to is None:
        return []
    if to.time is not None:
        # binlog times are whole seconds: stop at the first event of the next second
        whole = to.time.replace(microsecond=0) + timedelta(seconds=1)
        return [f"--stop-datetime={whole.strftime('%Y-%m-%d %H:%M:%S')}"]
    if to.position is not None:
        return [f"--stop-position={binlog.Pos.parse(to.position).pos}"]
    if to.gtid is not None:
        return [f"--stop-position={to.gtid}"]
    return []


def _tool_args(files: Sequence[Path], start_pos: int, to: RecoveryTarget | None) -> list[str]:
    return [f"--start-position={start_pos}", *_stop_args(to),
            *[str(f) for f in files]]


def _env() -> dict[str, str]:
    return {"TZ": "UTC"}  # --stop-datetime is read in the tool's time zone


_QUERY_SKIP = re.compile(r"^(BEGIN|COMMIT|ROLLBACK|XA |SAVEPOINT|RELEASE SAVEPOINT)\b", re.I)
_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_QUALIFIED = re.compile(
    r"(?:\b(?:FROM|INTO|UPDATE|JOIN|TABLE|TABLES|EXISTS|VIEW|TRIGGER|PROCEDURE|FUNCTION|EVENT"
    r"|REFERENCES|ON|TO|LIKE)\s+|,\s*)(" + _IDENT + r")\s*\.\s*" + _IDENT, re.I)


def _unquote(ident: str) -> str:
    return ident[1:-1].replace("``", "`") if ident.startswith("`") else ident


def statements(text: str) -> list[tuple[str, str | None, str]]:
    """(position, default database, statement) of every Query event in the tool's text."""
    out: list[tuple[str, str | None, str]] = []
    db: str | None = None
    at = "?"
    lines: list[str] = []
    in_query = False
    for line in text.splitlines():
        if line.startswith("# at "):
            at = line[5:].strip()
            continue
        if line.startswith("#") and "\tQuery\t" in line:
            in_query, lines = True, []
            continue
        if not in_query:
            continue
        if line.startswith("use "):
            db = _unquote(line[4:].split("/*!*/")[0].strip())
            continue
        if line.startswith("SET ") or (line.startswith("/*!") and not lines):
            continue
        lines.append(line)
        if line.rstrip().endswith("/*!*/;"):
            sql = "\n".join(lines).rsplit("/*!*/;", 1)[0].strip()
            if sql and not _QUERY_SKIP.match(sql):
                out.append((at, db, sql))
            in_query = False
    return out


def check_safe(files: Sequence[Path], start_pos: int, to: RecoveryTarget | None, source: str,
               dest: str) -> None:
    """Refuse (UnsafeReplay) logs whose statements reach beyond the destination database."""
    proc = _run_tool(_tool_args(files, start_pos, to))
    text = proc.stdout.decode(errors="replace")
    mention = re.compile(r"(?:`" + re.escape(source.replace("`", "``")) + r"`|\b"
                         + re.escape(source) + r"\b)", re.I)
    renamed = source != dest
    scratch = (" Restore onto a scratch server of its own instead (point the restore at another"
               " MariaDB server, where touching other databases is harmless), then copy what"
               " you need.")
    for at, db, sql in statements(text):
        short = " ".join(sql.split())[:160]
        here = db is not None and db.lower() == source.lower()
        if here:
            for m in _QUALIFIED.finditer(sql):
                other = _unquote(m.group(1))
                if other.lower() != source.lower():
                    raise UnsafeReplay(
                        f"the binary log holds, at position {at}, a statement in {source} that"
                        f" also touches database {other}: {short!r}; replaying it would change"
                        f" tables outside {dest}." + scratch)
            if renamed and mention.search(sql):
                raise UnsafeReplay(
                    f"the binary log holds, at position {at}, a statement that names database"
                    f" {source} itself: {short!r}; the replay runs under another name ({dest})"
                    " and cannot rewrite names inside statements." + scratch)
        elif mention.search(sql):
            raise UnsafeReplay(
                f"the binary log holds, at position {at}, a statement run in database"
                f" {db or '(none)'} that names {source}: {short!r}; it can be neither skipped"
                f" (its change to {source} would be lost) nor replayed (it runs elsewhere)."
                + scratch)


def _run_tool(args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    from safehold.engines import childenv

    try:
        proc = childenv.run([binlog.TOOL, "--no-defaults", *args], env=_env(),
                            capture_output=True)
    except FileNotFoundError:
        raise binlog.missing_tool() from None
    if proc.returncode != 0:
        raise EngineError(f"{binlog.TOOL} could not read the binlog:"
                          f" {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc


def replay(target: Target, files: Sequence[Path], start_pos: int, to: RecoveryTarget | None,
           source: str) -> None:
    """Pipe ``mariadb-binlog`` into ``mariadb`` connected to the destination database."""
    from safehold.engines import childenv

    args = ["--disable-log-bin", f"--database={source}"]
    if source != target.database:
        args.append(f"--rewrite-db={source}->{target.database}")
    try:
        producer = childenv.start([binlog.TOOL, "--no-defaults", *args,
                                   *_tool_args(files, start_pos, to)], env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise binlog.missing_tool() from None
    try:
        consumer = tools.start(CLIENT, target, ["--binary-mode", target.database],
                               stdin=producer.stdout, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    except FileNotFoundError:
        producer.kill()
        raise binlog.missing_tool(CLIENT) from None
    assert producer.stdout is not None
    producer.stdout.close()
    errors: dict[str, bytes] = {}

    def drain(name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        errors[name] = proc.stderr.read()

    readers = [threading.Thread(target=drain, args=(n, p), daemon=True)
               for n, p in (("tool", producer), ("client", consumer))]
    for r in readers:
        r.start()
    rc_client = consumer.wait()
    with contextlib.suppress(Exception):
        producer.wait(timeout=60)
    for r in readers:
        r.join(timeout=10)
    if producer.returncode not in (0, None) or rc_client != 0:
        detail = (errors.get("client") or errors.get("tool") or b"").decode(errors="replace")
        raise EngineError(
            f"replaying the binary log failed: {detail.strip()[-600:]}; the restore was"
            " abandoned before the destination was changed")
