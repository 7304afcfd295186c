"""A WAL streamer in its own process, for tests that kill it: ``python -m
tests.integration.walstream_child URL SLOT DIR STATUS`` (password in SAFEHOLD_PASSWORD)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from safehold.engines.base import ConnectionOptions
from safehold.engines.postgres.conn import parse_target
from safehold.engines.postgres.walstream import DirectorySink, WalStreamer


def main() -> None:
    url, slot, root, status = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO)
    target = parse_target(url, ConnectionOptions(password=os.environ.get("SAFEHOLD_PASSWORD")))
    WalStreamer(target, slot, DirectorySink(Path(root)), status_file=Path(status),
                status_interval=1.0).run()


if __name__ == "__main__":
    main()
