"""Starting a MySQL/MariaDB client tool (``mariadb``, ``mariadb-dump``, ``mariadb-binlog``...)
with the target's connection and password, never on its command line or in its environment.

The engine talks to the server through PyMySQL, and starts client tools where they do a job
faster or at all: the ``mariadb`` client reading a backup's rows (:mod:`.clientread`),
``mariadb-binlog`` pulling and replaying the binary log. Whatever tool is started gets the
connection in an option file passed as ``--defaults-file=/dev/fd/N``: a 0600 in-memory file
only it inherits (see :mod:`safehold.engines.childenv`). ``--defaults-file`` rather than
``--defaults-extra-file``: the user's ``~/.my.cnf`` is read *after* an extra file and would
override the target's settings, and ``MYSQL_PWD``, ``MYSQL_HOST`` and the like are not passed
on either, so the tool connects exactly as the engine does.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

from safehold.engines import childenv
from safehold.engines.mysql.conn import Target

# The client option names for each TLS mode (MariaDB's spelling, also accepted by MySQL 8).
_TLS_OPTIONS = {
    "disable": {"skip-ssl": None},
    "prefer": {},
    "require": {"ssl": None},
    "verify-ca": {"ssl": None},
    "verify-full": {"ssl": None, "ssl-verify-server-cert": None},
}


def _value(text: str) -> str:
    """``text`` as a double-quoted option-file value (the escapes my_default.c undoes)."""
    if "\0" in text:
        raise ValueError("a MySQL option file cannot carry a NUL byte")
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def option_file(target: Target, *, charset: bool = True) -> bytes:
    """The ``[client]`` group for ``target``: only options every client tool knows (an unknown
    one is an error), so the database and any timeout go on the command line. ``charset``
    False leaves out ``default-character-set``, which ``mariadb-binlog`` does not know."""
    options: dict[str, str | None] = {
        "host": target.host, "port": str(target.port), "user": target.user,
        "protocol": "tcp",
    }
    if charset:
        options["default-character-set"] = "utf8mb4"
    if target.password is not None:
        options["password"] = target.password
    options.update(_TLS_OPTIONS[target.tls])
    for key, path in (("ssl-ca", target.ca_file), ("ssl-cert", target.cert_file),
                      ("ssl-key", target.key_file)):
        if path:
            options[key] = path
    lines = ["[client]"] + [key if value is None else f"{key}={_value(value)}"
                            for key, value in options.items()]
    return ("\n".join(lines) + "\n").encode()


def start(tool: str, target: Target, args: Sequence[str], *, charset: bool = True,
          **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``tool`` (a path or a name on PATH) connected to ``target``'s server; ``args``
    (the database, what to do) follow the option file on its command line."""
    with childenv.SecretFile(option_file(target, charset=charset), name="my.cnf") as secret:
        return childenv.start([tool, f"--defaults-file={secret.path}", *args],
                              secrets=[secret], **popen)
