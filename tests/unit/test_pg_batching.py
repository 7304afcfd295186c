"""postgres.archive.batching: the whole-database restore commits in batches where pg_restore can
(17+: --transaction-size), and one statement at a time with older tools, which reject the option.
Both run for real in the restore tests, once per server (pg_server: 15's tools, 18's tools).
"""

from __future__ import annotations

import pytest

from safehold.engines.postgres.archive import TRANSACTION_SIZE, batching


@pytest.mark.parametrize("major", [13, 14, 15, 16])
def test_older_pg_restore_commits_each_statement(major: int) -> None:
    assert batching(major) == []


@pytest.mark.parametrize("major", [17, 18, 19])
def test_pg_restore_17_and_newer_commit_in_bounded_batches(major: int) -> None:
    assert batching(major) == [f"--transaction-size={TRANSACTION_SIZE}"]
    assert 1 < TRANSACTION_SIZE <= 1000  # pg_upgrade's batch: bounded lock use per transaction
