"""rows.values_list: rendered tuples (each ending in ROW_END, after it a newline as the client
prints them) become one VALUES list, every raw newline inside a value escaped as ``\\n``."""

from __future__ import annotations

import pytest

from safehold.engines.mysql.rows import ROW_END, values_list

ROWS = [b"(1,'a')", b"(2,'b\\\\')", b"(3,NULL)"]


@pytest.mark.parametrize("lines", [True, False])
def test_rows_without_newlines_join_with_commas(lines: bool) -> None:
    end = ROW_END + (b"\n" if lines else b"")
    body = b"".join(r + end for r in ROWS)
    assert values_list(body, len(ROWS), lines=lines) == b"(1,'a'),(2,'b\\\\'),(3,NULL)"


@pytest.mark.parametrize("lines", [True, False])
def test_newlines_inside_values_are_escaped(lines: bool) -> None:
    end = ROW_END + (b"\n" if lines else b"")
    # a value ending in a backslash (doubled by QUOTE) right before its newline, and a value
    # that is only newlines
    rows = [b"(1,'x\\\\\ny')", b"(2,'\n\n')", b"(3,'z')"]
    body = b"".join(r + end for r in rows)
    assert values_list(body, 3, lines=lines) == b"(1,'x\\\\\\ny'),(2,'\\n\\n'),(3,'z')"


def test_a_newline_count_that_happens_to_match_is_not_taken_for_row_ends() -> None:
    # two rows without the client's newlines but with two newlines inside values: the count of
    # removed newlines (2) must be compared with what lines=False expects (0)
    body = b"(1,'a\n')" + ROW_END + b"(2,'\nb')" + ROW_END
    assert values_list(body, 2, lines=False) == b"(1,'a\\n'),(2,'\\nb')"


def test_one_row() -> None:
    assert values_list(b"(7)" + ROW_END + b"\n", 1, lines=True) == b"(7)"
