"""A MariaDB database of mixed types for the MySQL engine tests, a writer that keeps an
invariant, and ways to compare databases."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql

from tests.infra.mariadb import MariaDB

ACCOUNTS = 50
START_BALANCE = 1000
# Tables the writer never touches: a restore must give them back exactly.
STATIC = ["types", "big_blobs", "unicode_text", "latin1_text", "many_rows", "empty_table",
          "parent", "child", "legacy", "hidden_cols", "zero_ids"]
LIVE = ["accounts", "ledger"]

SCHEMA = [
    """CREATE TABLE types (id INT PRIMARY KEY, tiny TINYINT, small SMALLINT UNSIGNED,
       med MEDIUMINT, big BIGINT UNSIGNED, dec_ DECIMAL(30,10), f FLOAT, d DOUBLE, bits BIT(13),
       dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), yr YEAR, ch CHAR(5),
       vc VARCHAR(200), tx TEXT, en ENUM('red','green'), st SET('a','b','c'), js JSON,
       bn BINARY(4), vb VARBINARY(50), bl BLOB, gen INT AS (id * 2) VIRTUAL)""",
    "CREATE TABLE big_blobs (id INT PRIMARY KEY, data LONGBLOB)",
    "CREATE TABLE unicode_text (id INT PRIMARY KEY, s VARCHAR(300)) CHARSET utf8mb4",
    "CREATE TABLE latin1_text (id INT PRIMARY KEY, s VARCHAR(100)) CHARSET latin1",
    "CREATE TABLE many_rows (id INT PRIMARY KEY, words VARCHAR(200), code CHAR(40), KEY (code))",
    "CREATE TABLE empty_table (id INT PRIMARY KEY, x TEXT)",
    "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20))",
    """CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL,
       CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE)""",
    "CREATE TABLE legacy (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM",
    "CREATE TABLE hidden_cols (id INT PRIMARY KEY, secret INT INVISIBLE, v INT)",
    "CREATE TABLE zero_ids (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    "CREATE TABLE accounts (id INT PRIMARY KEY, balance DECIMAL(12,2) NOT NULL)",
    """CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT,
       amount DECIMAL(12,2), note VARCHAR(40))""",
    "CREATE VIEW v_total AS SELECT SUM(balance) AS total FROM accounts",
    "CREATE VIEW a_on_top AS SELECT total * 2 AS doubled FROM v_total",  # sorts before v_total
    """CREATE TRIGGER ledger_note BEFORE INSERT ON ledger FOR EACH ROW
       SET NEW.note = CONCAT('moved ', NEW.amount)""",
    """CREATE PROCEDURE transfer(IN a INT, IN b INT, IN amt DECIMAL(12,2))
       BEGIN
         UPDATE accounts SET balance = balance - amt WHERE id = a;
         UPDATE accounts SET balance = balance + amt WHERE id = b;
         INSERT INTO ledger (src, dst, amount) VALUES (a, b, amt);
       END""",
    "CREATE FUNCTION total_money() RETURNS DECIMAL(14,2) READS SQL DATA"
    " RETURN (SELECT SUM(balance) FROM accounts)",
    "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM ledger WHERE id < 0",
]

TEXTS = ["plain", "emoji 😀🎉 and 汉字", "new\nline\r\nCRLF", "back\\slash \\n literal",
         "quotes ' \" `", "nul \x00 and ctrl-z \x1a", "", "   spaces   ", "ünïcödé"]


def cli_env(cfg_dir: Path, server: MariaDB) -> dict[str, str]:
    """The CLI's environment for a test against ``server``: an empty config file in
    ``cfg_dir``, no encryption (no key here: unencrypted by explicit choice), the server's
    password, and no key, passphrase or MYSQL_PWD inherited from the machine."""
    cfg = cfg_dir / "safehold.yaml"
    cfg.write_text("{}\n")
    return {"SAFEHOLD_NO_ENCRYPTION": "1", "SAFEHOLD_CONFIG": str(cfg),
            "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_PASSWORD": server.password, "MYSQL_PWD": ""}


@contextlib.contextmanager
def database(server: MariaDB, prefix: str, many_rows: int = 20000) -> Iterator[str]:
    """A new utf8mb4 database (``prefix`` and a random suffix) holding :func:`create`'s tables,
    dropped on exit."""
    db = f"{prefix}_{uuid.uuid4().hex[:8]}"
    server.sql(f"CREATE DATABASE {db} CHARACTER SET utf8mb4")
    try:
        create(server, db, many_rows=many_rows)
        yield db
    finally:
        server.sql(f"DROP DATABASE IF EXISTS {db}")


def connect(server: MariaDB, db: str | None = None, **kw: Any) -> Any:
    kw.setdefault("autocommit", True)
    return pymysql.connect(host=server.host, port=server.port, user=server.user,
                           password=server.password, database=db, charset="utf8mb4", **kw)


def create(server: MariaDB, db: str, many_rows: int = 20000) -> None:
    conn = connect(server, db)
    rnd = random.Random(3)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        for statement in SCHEMA:
            cur.execute(statement)
        cur.executemany(
            "INSERT INTO types (id, tiny, small, med, big, dec_, f, d, bits, dt, dtm, ts, tm, yr,"
            " ch, vc, tx, en, st, js, bn, vb, bl) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(1, -128, 65535, -8388608, 18446744073709551615, "12345678901234567890.0123456789",
              3.1415927, 0.1 + 0.2, 0b1010101010101, "1000-01-01", "2024-02-29 23:59:59.999999",
              "2038-01-19 03:14:07.499999", "-838:59:59.000000", 2155, "ab", TEXTS[1], TEXTS[2],
              "green", "a,c", '{"k": [1, 2.5, "x\\n", null, {"e": "😀"}]}', b"\x00\x01\x02\x03",
              b"\xff\x00\n\r'\\", bytes(range(256))),
             (2,) + (None,) * 22,
             (3, 0, 0, 0, 0, "-0.0000000001", -1e-30, 1e308, 0, "2000-01-01",
              "1970-01-01 00:00:01.000000", None, "00:00:00.000001", 1901, "", "", "", "red", "",
              "[]", b"\x00\x00\x00\x00", b"", b"")])
        cur.executemany("INSERT INTO big_blobs VALUES (%s, %s)",
                        [(i, os.urandom(n)) for i, n in enumerate([2 << 20, 3 << 20, 1, 0])])
        cur.executemany("INSERT INTO unicode_text VALUES (%s, %s)", list(enumerate(TEXTS)))
        cur.executemany("INSERT INTO latin1_text VALUES (%s, %s)",
                        [(1, "ñandú"), (2, "straße"), (3, "£ ¥ ©")])
        words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "θ"]
        for start in range(0, many_rows, 5000):
            cur.executemany("INSERT INTO many_rows VALUES (%s, %s, %s)",
                            [(i, " ".join(rnd.choices(words, k=8)), f"{rnd.getrandbits(160):040x}")
                             for i in range(start, min(start + 5000, many_rows))])
        cur.executemany("INSERT INTO parent VALUES (%s, %s)", [(i, f"p{i}") for i in range(20)])
        cur.executemany("INSERT INTO child VALUES (%s, %s)", [(i, i % 20) for i in range(100)])
        cur.execute("INSERT INTO legacy VALUES (1, 'myisam')")
        cur.execute("INSERT INTO hidden_cols (id, secret, v) VALUES (1, 42, 7), (2, NULL, 8)")
        cur.execute("INSERT INTO zero_ids VALUES (0, 0), (5, 5)")
        cur.executemany("INSERT INTO accounts VALUES (%s, %s)",
                        [(i, START_BALANCE) for i in range(ACCOUNTS)])
    conn.close()


class Writer(threading.Thread):
    """Moves money between accounts (one transaction: 2 updates + a ledger row) until stopped."""

    def __init__(self, server: MariaDB, db: str) -> None:
        super().__init__(daemon=True)
        self.server, self.db = server, db
        self.commits = 0
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rnd = random.Random(11)
        try:
            conn = connect(self.server, self.db, autocommit=False)
            with conn.cursor() as cur:
                while not self.stop_flag.is_set():
                    a, b = rnd.sample(range(ACCOUNTS), 2)
                    cur.execute("CALL transfer(%s, %s, %s)", (a, b, rnd.randint(1, 5000) / 100))
                    conn.commit()
                    self.commits += 1
                    time.sleep(0.001)
            conn.close()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> int:
        self.stop_flag.set()
        self.join(10)
        assert self.error is None, f"writer failed: {self.error!r}"
        return self.commits


def rows(server: MariaDB, db: str, table: str) -> list[tuple[Any, ...]]:
    conn = connect(server, db)
    with conn.cursor() as cur:
        cols = [r[0] for r in _query(cur, "SELECT COLUMN_NAME FROM information_schema.COLUMNS"
                                     " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
                                     " ORDER BY ORDINAL_POSITION", (db, table))]
        out = _query(cur, f"SELECT {', '.join(f'`{c}`' for c in cols)} FROM `{table}`"
                     " ORDER BY 1")
    conn.close()
    return out


def checksum(server: MariaDB, db: str, table: str) -> int:
    return int(server.sql(f"CHECKSUM TABLE `{db}`.`{table}`").split("\t")[1])


def scalar(server: MariaDB, sql: str, db: str | None = None) -> Any:
    conn = connect(server, db)
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
    conn.close()
    return row[0] if row else None


def _query(cur: Any, sql: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    cur.execute(sql, args)
    return list(cur.fetchall())
