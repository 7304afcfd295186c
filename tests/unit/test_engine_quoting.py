"""The per-engine quoting helpers: what a hostile name or setting turns into."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from safehold.engines.mongodb import names
from safehold.engines.mysql import quote as my
from safehold.engines.postgres import quote as pg
from safehold.engines.sqlite import quote as lite


def test_postgres_identifiers_and_conninfo() -> None:
    assert pg.qualified('a"b', "c.d") == '"a""b"."c.d"'
    assert pg.split_identifiers('app."Odd ""x""; $$"') == ["app", 'Odd "x"; $$']
    assert pg.split_identifiers("public.plain") == ["public", "plain"]
    assert pg.conninfo_value("it's \\ x") == "'it\\'s \\\\ x'"


def test_postgres_settings_are_literals() -> None:
    name, value = pg.setting("application_name=x', y; CREATE ROLE evil SUPERUSER; --")
    assert name == "application_name"
    assert isinstance(value, sql.Literal)
    assert value._wrapped == "x', y; CREATE ROLE evil SUPERUSER; --"  # type: ignore[attr-defined]
    name, value = pg.setting('search_path="$user", public, "a""b", "x,y;z"')
    assert isinstance(value, sql.Composed)
    literals = [part._wrapped for part in value if isinstance(part, sql.Literal)]  # type: ignore[attr-defined]
    assert literals == ["$user", "public", 'a"b', "x,y;z"]
    assert pg.split_setting_list('""') == [""]
    with pytest.raises(ValueError):
        pg.split_setting_list('"unterminated')


def test_mysql_names_literals_and_rules() -> None:
    assert my.name("back`tick") == "`back``tick`"
    assert my.qualified("d", "t") == "`d`.`t`"
    assert my.literal("it's\n\\") == "'it\\'s\\n\\\\'"
    assert my.rule("set null") == "SET NULL"
    with pytest.raises(ValueError):
        my.rule("CASCADE; DROP TABLE x")
    with pytest.raises(ValueError):
        my.name("nul\0")


def test_sqlite_identifiers() -> None:
    assert lite.ident('quo"te') == '"quo""te"'


@pytest.mark.parametrize("bad", ["", "a$b", "system.users", "nul\0", "x" * 300])
def test_mongodb_refuses_collection_names_the_server_would_misread(bad: str) -> None:
    with pytest.raises(names.InvalidName, match="cannot be restored"):
        names.collection("db", bad)


@pytest.mark.parametrize("good", ["it's", 'quo"te', "semi;colon", "new\nline", "ünï ✓"])
def test_mongodb_keeps_other_collection_names(good: str) -> None:
    assert names.collection("db", good, suffix="__safehold_restore") == good


@pytest.mark.parametrize("bad", ["", "a.b", "a/b", "a b", "a$b", "x" * 64])
def test_mongodb_refuses_database_names(bad: str) -> None:
    with pytest.raises(names.InvalidName, match="target URI"):
        names.database(bad)
