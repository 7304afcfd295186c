"""What a backup's toc.json may say pg_dump compressed its archives with (engine.py:
archive_compression): a spec Safehold writes, or an IntegrityError naming the value, before
the value reaches a tool probe or an error asking for client tools of a codec that does not
exist. An unencrypted backup's toc.json is protected by nothing but the storage."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api.errors import IntegrityError
from safehold.engines.postgres.catalog import Toc
from safehold.engines.postgres.engine import archive_compression


def toc(*compressions: Any) -> Toc:
    objects: dict[str, dict[str, Any]] = {"schema.pre": {"section": "pre-data"}}
    for i, c in enumerate(compressions):
        objects[f"data/{i:04d}"] = {"section": "data", "compression": c}
    return Toc(database={}, tables=[], sequences=[], views=[], functions=[], objects=objects)


@pytest.mark.parametrize(("compressions", "expected"), [
    ((), "none"),
    (("none", "none"), "none"),
    (("zstd:3", "zstd:3"), "zstd:3"),
    (("zstd:3", "none"), "zstd:3"),  # the schema archives: compressed or not, alike
    (("gzip",), "gzip"),
    (("lz4:1",), "lz4:1"),
    (("zstd:-5",), "zstd:-5"),
])
def test_what_safehold_writes_is_read(compressions: tuple[str, ...], expected: str) -> None:
    assert archive_compression(toc(*compressions)) == expected


@pytest.mark.parametrize(("compressions", "named"), [
    (("evil",), "'evil'"),
    (("bzip2:9",), "'bzip2:9'"),  # pg_dump has no bzip2: the pipeline compresses those
    (("zstd:3 --file=/etc/passwd",), "'zstd:3 --file=/etc/passwd'"),
    (("zstd:3\n",), "'zstd:3\\n'"),
    ((3,), "3"),
    ((["zstd"],), "['zstd']"),
    (("zstd:3", "gzip:6"), "'gzip:6', 'zstd:3'"),  # one backup, one codec
])
def test_anything_else_is_refused_as_damage(compressions: tuple[Any, ...], named: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        archive_compression(toc(*compressions))
    message = str(caught.value)
    assert named in message
    assert "damaged or was not written by Safehold" in message
