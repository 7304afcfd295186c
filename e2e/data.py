"""The data of the e2e scenarios: the same small `shop` database on every engine, written and
fingerprinted by SQL (or a Python script for SQLite) that runs unchanged in both modes —
through the local servers' clients, or ``kubectl exec`` / a Pod on kind."""

from __future__ import annotations

SOURCE = "shop"  # the database the examples back up
CUSTOMERS, ORDERS = 2000, 5000

PG_SEED = f"""
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, email text,
                        created timestamptz NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com',
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
  FROM generate_series(1, {CUSTOMERS}) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers,
                     total numeric(10,2) NOT NULL, note text);
INSERT INTO orders SELECT g, 1 + g % {CUSTOMERS}, (g * 37 % 100000) / 100.0,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
  FROM generate_series(1, {ORDERS}) g;
"""
PG_FINGERPRINT = """
SELECT 'customers', count(*), md5(coalesce(string_agg(c::text, '|' ORDER BY id), ''))
  FROM customers c
UNION ALL
SELECT 'orders', count(*), md5(coalesce(string_agg(o::text, '|' ORDER BY id), '')) FROM orders o
"""

MARIADB_SEED = f"""
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(100),
                        created DATETIME NOT NULL);
INSERT INTO customers SELECT seq, CONCAT('customer ', seq), CONCAT('c', seq, '@example.com'),
       '2024-01-01 00:00:00' + INTERVAL seq MINUTE FROM seq_1_to_{CUSTOMERS};
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL,
                     total DECIMAL(10,2) NOT NULL, note VARCHAR(100),
                     FOREIGN KEY (customer_id) REFERENCES customers (id));
INSERT INTO orders SELECT seq, 1 + seq % {CUSTOMERS}, (seq * 37 % 100000) / 100,
       IF(seq % 3 = 0, NULL, CONCAT('note ', seq)) FROM seq_1_to_{ORDERS};
"""
MARIADB_FINGERPRINT = """
SET SESSION group_concat_max_len = 16777216;
SELECT 'customers', COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS(',', id, name, IFNULL(email, '~'),
       created) ORDER BY id SEPARATOR '|')) FROM customers
UNION ALL
SELECT 'orders', COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS(',', id, customer_id, total,
       IFNULL(note, '~')) ORDER BY id SEPARATOR '|')) FROM orders;
"""

# python3 -c SQLITE_SCRIPT seed|fingerprint PATH (the runner image has python3 and sqlite3)
SQLITE_SCRIPT = f"""
import hashlib, sqlite3, sys
action, path = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path)
if action == "seed":
    conn.executescript('''
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, created TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL
                     REFERENCES customers, total REAL NOT NULL, note TEXT, data BLOB);
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {CUSTOMERS})
INSERT INTO customers SELECT n, 'customer ' || n, 'c' || n || '@example.com',
       datetime('2024-01-01', '+' || n || ' minutes') FROM g;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {ORDERS})
INSERT INTO orders SELECT n, 1 + n % {CUSTOMERS}, (n * 37 % 100000) / 100.0,
       CASE WHEN n % 3 = 0 THEN NULL ELSE 'note ' || n END, randomblob(64) FROM g;
''')
    conn.commit()
else:
    for table in ("customers", "orders"):
        rows = conn.execute(f"SELECT * FROM {{table}} ORDER BY id").fetchall()
        print(table, len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
conn.close()
"""


def parse(out: str) -> dict[str, tuple[int, str]]:
    """Fingerprint output (one `table count hash` line per table, any whitespace/| separators)
    -> {table: (rows, hash)}; fails on an empty database."""
    found = {}
    for line in out.strip().splitlines():
        table, count, digest = line.replace("|", " ").split()
        found[table] = (int(count), digest)
    assert set(found) == {"customers", "orders"}, out
    return found


EXPECTED_ROWS = {"customers": CUSTOMERS, "orders": ORDERS}

# MongoDB (kind mode only): mongosh scripts run in the database named on its command line
MONGODB_SEED = f"""
db.customers.insertMany(Array.from({{length: {CUSTOMERS}}}, (_, i) => ({{_id: i + 1,
  name: 'customer ' + (i + 1), email: 'c' + (i + 1) + '@example.com'}})));
db.orders.insertMany(Array.from({{length: {ORDERS}}}, (_, i) => ({{_id: i + 1,
  customer_id: 1 + (i + 1) % {CUSTOMERS}, total: ((i + 1) * 37 % 100000) / 100,
  note: (i + 1) % 3 === 0 ? null : 'note ' + (i + 1)}})));
"""
MONGODB_FINGERPRINT = """
for (const t of ['customers', 'orders']) {
  const docs = db.getCollection(t).find().sort({_id: 1}).toArray();
  print(t, docs.length, require('crypto').createHash('sha256')
    .update(EJSON.stringify(docs)).digest('hex'));
}
"""

# Point in time (PostgreSQL and MariaDB): a table `events` of `shop` written in batches around
# the time a Restore goes back to; the same SQL on both engines.
EVENTS_TABLE = "CREATE TABLE events (id INT PRIMARY KEY, batch VARCHAR(10) NOT NULL)"
EVENTS_ROWS = "SELECT CONCAT(id, ':', batch) FROM events ORDER BY id"
AT_TIME = f"{SOURCE}_at_time"  # docs/examples/mariadb/pointintime-restore.yaml's database


def events(batch: str, ids: range) -> str:
    """The INSERT of batch ``batch``: one row per id."""
    return "INSERT INTO events VALUES " + ", ".join(f"({i}, '{batch}')" for i in ids)
