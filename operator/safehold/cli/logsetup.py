"""Where the CLI's logs go: stderr (text or JSON lines) and optionally a rotated file.

The JSON formatter is the standard library's ``logging`` with a dozen lines on top (one object
per line, ``extra=`` fields merged in): python-json-logger would do the same and add a
dependency the runner image must carry. Rotation uses the standard library's handlers:
``--log-rotate 10MiB`` (size: RotatingFileHandler) or ``hourly``/``daily``/``midnight`` (time:
TimedRotatingFileHandler, UTC), keeping ``--log-keep`` old files.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from safehold.api.errors import UsageError

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "text", "json")
_TIMED = {"hourly": "H", "daily": "D", "midnight": "midnight"}
_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB)?$", re.IGNORECASE)
_UNITS = {"b": 1, "kib": 1024, "mib": 2**20, "gib": 2**30}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``extra=`` fields become keys)."""

    _RESERVED = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in vars(record).items()
                     if k not in self._RESERVED and not k.startswith("_")})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


@dataclass(frozen=True)
class Rotation:
    """``max_bytes`` (size-based) or ``when`` (time-based); neither: the file only grows."""

    max_bytes: int | None = None
    when: str | None = None


def parse_rotation(text: str | None) -> Rotation:
    """``10MiB``/``1048576`` (rotate at that size) or ``hourly``, ``daily``, ``midnight``."""
    if not text:
        return Rotation()
    value = text.strip().lower()
    if value in _TIMED:
        return Rotation(when=_TIMED[value])
    match = _SIZE.match(text.strip())
    if match:
        size = int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
        if size >= 4096:
            return Rotation(max_bytes=size)
    raise UsageError(f"invalid log rotation {text!r}",
                     hint="give a size of at least 4KiB (e.g. 10MiB) or hourly, daily, midnight")


def _file_handler(path: Path, rotation: Rotation, keep: int) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if rotation.max_bytes:
            return logging.handlers.RotatingFileHandler(
                path, maxBytes=rotation.max_bytes, backupCount=keep, encoding="utf-8")
        if rotation.when:
            return logging.handlers.TimedRotatingFileHandler(
                path, when=rotation.when, backupCount=keep, utc=True, encoding="utf-8")
        return logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot open the log file {path}: {exc.strerror or exc}",
                         hint="choose a writable --log-file (or log.file in the config)") from None


def setup_logging(level: str, fmt: str, *, file: Path | None = None,
                  rotation: Rotation | None = None, keep: int = 5) -> None:
    """Route the root logger to stderr (rich on a terminal with ``auto``) and ``file``."""
    handlers: list[logging.Handler] = []
    stream: logging.Handler
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        from safehold.cli.common import stderr_console

        # the same console as the progress bar, so log lines print above it, not through it
        stream = RichHandler(console=stderr_console(), show_time=False, show_path=False)
    else:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handlers.append(stream)
    if file is not None:
        handler = _file_handler(file, rotation or Rotation(), keep)
        # a file is read by tools: JSON unless text was asked for explicitly
        handler.setFormatter(logging.Formatter(TEXT_FORMAT) if fmt == "text" else JsonFormatter())
        handlers.append(handler)
    root = logging.getLogger()
    for old in root.handlers:
        if old not in handlers and isinstance(old, logging.FileHandler):
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # the CLI's level rules its process: a level left on the package logger by other code in it
    # (the operator's reporting.start, run in-process by the tests) must not override it
    logging.getLogger("safehold").setLevel(logging.NOTSET)
