"""A WAL streamer in its own process, for tests that kill it: ``python -m
tests.integration.walstream_child URL SLOT DIR STATUS`` (password in SAFEHOLD_PASSWORD)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from safehold.engines.base import ConnectionOptions
from safehold.engines.postgres.conn import parse_target
from safehold.engines.postgres.walstream import DirectorySink, WalStreamer
from tests.infra.postgres import PASSWORD, SUPERUSER, Postgres


class Child:
    """The streamer as a child process of a test (killable); its status file read back."""

    def __init__(self, pg: Postgres, slot: str, archive: Path, status: Path, *,
                 warn_retained: int = 1 << 30) -> None:
        self.status = status
        self.log = status.with_suffix(".log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.walstream_child",
             f"postgresql://{SUPERUSER}@{pg.host}:{pg.port}/postgres", slot, str(archive),
             str(status)],
            env={**os.environ, "SAFEHOLD_PASSWORD": PASSWORD,
                 "WARN_RETAINED": str(warn_retained)}, stdout=self.log,
            stderr=subprocess.STDOUT)

    def read(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.status.read_text()))
        except (OSError, ValueError):
            return {}

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()


def main() -> None:
    url, slot, root, status = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO)
    target = parse_target(url, ConnectionOptions(password=os.environ.get("SAFEHOLD_PASSWORD")))
    WalStreamer(target, slot, DirectorySink(Path(root)), status_file=Path(status),
                status_interval=1.0, warn_retained=int(os.environ.get("WARN_RETAINED", 1 << 30)),
                health_interval=1.0).run()


if __name__ == "__main__":
    main()
