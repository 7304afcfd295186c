"""A PostgreSQL test database of mixed types, a writer that logs what it committed, checksums."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from tests.infra.postgres import PASSWORD, Postgres

KEY = "c2FmZWhvbGQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE="  # base64 of 32 bytes


def encrypted_env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment for a test server, encrypted with :data:`KEY` as users run it;
    no developer config or keys."""
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": KEY, "SAFEHOLD_PASSPHRASE": "", "PGPASSWORD": "",
            "SAFEHOLD_PASSWORD": PASSWORD}


def built_database(pg: Postgres) -> Iterator[str]:
    """A fresh database on ``pg`` holding :func:`build`'s data, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg.psql(f'CREATE DATABASE "{name}"')
    build(pg, name)
    yield name
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

SCHEMA = r"""
CREATE SCHEMA app;
CREATE TYPE app.status AS ENUM ('new', 'paid', 'shipped');
CREATE SEQUENCE app.tickets START 1000;
CREATE FUNCTION app.next_ticket() RETURNS bigint LANGUAGE sql AS $$SELECT nextval('app.tickets')$$;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        created timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer_id int NOT NULL REFERENCES customers(id),
                     amount numeric(14, 2), placed timestamp, status app.status DEFAULT 'new',
                     tags text[], ticket bigint DEFAULT app.next_ticket());
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE items (id bigserial PRIMARY KEY, order_id bigint REFERENCES orders(id),
                    sku text, qty int CHECK (qty > 0), price numeric);
CREATE TABLE blobs (id int PRIMARY KEY, data bytea, note text);
CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb, u uuid, r int4range);
CREATE TABLE measurements (id int PRIMARY KEY, val double precision, readings int[],
                           span interval, day date, at timetz);
CREATE TABLE "Ünïcode Tablé" ("Ключ" int PRIMARY KEY, "värde" text);
CREATE TABLE empty_table (id int PRIMARY KEY);
CREATE TABLE app.settings (key text PRIMARY KEY, value jsonb NOT NULL);
CREATE TABLE app.accounts (id int PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE app.ledger (id bigserial PRIMARY KEY, xid bigint NOT NULL, src int, dst int,
                         amount bigint);
CREATE VIEW app.order_totals AS
    SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.name;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN NEW.note := coalesce(NEW.note, 'touched'); RETURN NEW; END$$;
CREATE TRIGGER blobs_touch BEFORE INSERT ON blobs FOR EACH ROW EXECUTE FUNCTION app.touch();
COMMENT ON TABLE orders IS 'orders placed by customers';
"""

DATA = r"""
INSERT INTO customers (name, email, created)
    SELECT 'cust ' || i || ' ✓ 名前', 'c' || i || '@example.com',
           timestamptz '2024-01-01 00:00+00' + i * interval '1 hour'
    FROM generate_series(1, 300) i;
INSERT INTO orders (customer_id, amount, placed, status, tags)
    SELECT 1 + i % 300, (i * 12.345)::numeric(14, 2), timestamp '2024-02-01' + i * interval '1 min',
           (ARRAY['new', 'paid', 'shipped'])[1 + i % 3]::app.status,
           CASE WHEN i % 7 = 0 THEN NULL ELSE ARRAY['a' || i, 'b,"q"'] END
    FROM generate_series(1, 2000) i;
INSERT INTO items (order_id, sku, qty, price)
    SELECT 1 + i % 2000, 'SKU-' || i, 1 + i % 5, i / 7.0 FROM generate_series(1, 5000) i;
INSERT INTO blobs (id, data, note)
    SELECT i, CASE WHEN i % 5 = 0 THEN NULL
                   ELSE decode(repeat(md5(i::text), 200 * i), 'hex') END,
           CASE WHEN i % 2 = 0 THEN 'tab	newline
 backslash \ quote '' end' END
    FROM generate_series(1, 40) i;
INSERT INTO docs SELECT i, json_build_object('i', i, 'u', 'ü€😀'),
                        jsonb_build_object('n', i, 'arr', jsonb_build_array(i, NULL, 'x')),
                        md5(i::text)::uuid, int4range(i, i * 2 + 1)
    FROM generate_series(1, 500) i;
INSERT INTO measurements SELECT i, CASE WHEN i % 11 = 0 THEN 'NaN' ELSE i / 3.0 END,
                                ARRAY[i, i + 1, NULL], i * interval '1 second',
                                date '2000-01-01' + i, time with time zone '12:00+02'
    FROM generate_series(1, 3000) i;
INSERT INTO "Ünïcode Tablé" SELECT i, repeat('ж', i % 50) FROM generate_series(1, 100) i;
INSERT INTO app.settings VALUES ('a', '{"x": 1}'), ('b', '[1, 2, {"y": null}]'), ('c', '"s"');
INSERT INTO app.accounts SELECT i, 1000 FROM generate_series(1, 20) i;
SELECT setval('app.tickets', 5000);
"""

# Tables the writer never touches, with their primary-key column, for checksums.
STATIC = {"customers": "id", "orders": "id", "items": "id", "blobs": "id", "docs": "id",
          "measurements": "id", '"Ünïcode Tablé"': '"Ключ"', "empty_table": "id",
          "app.settings": "key"}
SEQUENCES = ["customers_id_seq", "orders_id_seq", "items_id_seq", "app.tickets"]
ACCOUNTS, START_BALANCE = 20, 1000


def connect(pg: Postgres, db: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                            dbname=db)


def build(pg: Postgres, db: str) -> None:
    conn = connect(pg, db)
    with conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.execute(DATA)
        cur.execute("SELECT app.next_ticket() FROM generate_series(1, 3)")
        cur.execute("ANALYZE")
    conn.close()


def fingerprint(pg: Postgres, db: str) -> dict[str, object]:
    """Row count and md5 of every static table's rows in key order, and sequence values."""
    conn = connect(pg, db)
    out: dict[str, object] = {}
    with conn.cursor() as cur:
        for table, key in STATIC.items():
            cur.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {key}),"
                        f" '')) FROM {table} t")
            out[table] = cur.fetchone()
        for seq in SEQUENCES:
            cur.execute(f"SELECT last_value, is_called FROM {seq}")
            out[seq] = cur.fetchone()
    conn.close()
    return out


class Writer(threading.Thread):
    """Transfers between accounts, each logged in app.ledger with its transaction id."""

    def __init__(self, pg: Postgres, db: str) -> None:
        super().__init__(daemon=True)
        self.conn = connect(pg, db)
        self.committed: list[int] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            while not self.stop_event.is_set():
                i += 1
                src, dst = 1 + i % ACCOUNTS, 1 + (i * 7 + 3) % ACCOUNTS
                with self.conn, self.conn.cursor() as cur:
                    cur.execute("UPDATE app.accounts SET balance = balance - %s WHERE id = %s",
                                (i % 13, src))
                    cur.execute("UPDATE app.accounts SET balance = balance + %s WHERE id = %s",
                                (i % 13, dst))
                    cur.execute("INSERT INTO app.ledger (xid, src, dst, amount) VALUES"
                                " (pg_current_xact_id()::text::bigint, %s, %s, %s)"
                                " RETURNING xid", (src, dst, i % 13))
                    xid = cur.fetchone()[0]
                self.committed.append(xid)  # only after COMMIT succeeded
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()

    def wait_for(self, commits: int) -> None:
        target = len(self.committed) + commits
        while len(self.committed) < target:
            assert self.error is None and self.is_alive(), f"writer died: {self.error}"
            self.stop_event.wait(0.01)


@contextmanager
def writing(pg: Postgres, db: str) -> Iterator[Writer]:
    writer = Writer(pg, db)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop_event.set()
        writer.join(10)
    assert writer.error is None, writer.error


def visible(pg: Postgres, xids: list[int], snapshot: str) -> set[int]:
    """The transaction ids among ``xids`` that ``snapshot`` (pg_snapshot text) sees."""
    conn = connect(pg, "postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT x FROM unnest(%s::bigint[]) x"
                    " WHERE pg_visible_in_snapshot(x::text::xid8, %s::pg_snapshot)",
                    (xids, snapshot))
        out = {r[0] for r in cur.fetchall()}
    conn.close()
    return out


def ledger_consistent(pg: Postgres, db: str) -> set[int]:
    """Check every balance equals the start plus its ledger rows; return the ledger's xids."""
    conn = connect(pg, db)
    with conn.cursor() as cur:
        cur.execute("""
            SELECT a.id, a.balance,
                   %s - coalesce((SELECT sum(amount) FROM app.ledger WHERE src = a.id), 0)
                      + coalesce((SELECT sum(amount) FROM app.ledger WHERE dst = a.id), 0)
            FROM app.accounts a ORDER BY a.id""", (START_BALANCE,))
        rows = cur.fetchall()
        cur.execute("SELECT xid FROM app.ledger")
        xids = {r[0] for r in cur.fetchall()}
    conn.close()
    assert len(rows) == ACCOUNTS
    assert all(balance == expected for _, balance, expected in rows), rows
    return xids


def fingerprint_some(pg: Postgres, db: str, tables: list[str]) -> dict[str, object]:
    conn = connect(pg, db)
    out: dict[str, object] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY"
                        f" {STATIC[table]}), '')) FROM {table} t")
            out[table] = cur.fetchone()
    conn.close()
    return out
