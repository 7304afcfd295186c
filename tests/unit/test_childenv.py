"""engines.childenv: the allow-listed environment, in-memory secret files, and the rule that
nothing in the runner starts a process any other way."""

from __future__ import annotations

import ast
import os
import stat
import sys
from pathlib import Path

import pytest

from safehold.engines import childenv
from safehold.engines.common import url_password_warning
from safehold.engines.mysql.conn import Target
from safehold.engines.mysql.tools import option_file
from safehold.engines.postgres.procs import passfile

SOURCE = Path(childenv.__file__).resolve().parents[1]  # operator/safehold
SECRETS = {
    "SAFEHOLD_KEY": "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleS0=",
    "SAFEHOLD_KEY_FILE": "/run/secrets/key", "SAFEHOLD_PASSPHRASE": "pass phrase",
    "SAFEHOLD_PASSWORD": "db-password", "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SESSION_TOKEN": "tok",
    "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=x", "AZURE_CLIENT_SECRET": "az",
    "GOOGLE_APPLICATION_CREDENTIALS": "/gcp.json", "PGPASSWORD": "pg", "MYSQL_PWD": "my",
    "PGOPTIONS": "-c search_path=evil",
}


def test_environment_keeps_only_the_allow_list_and_what_the_caller_adds() -> None:
    base = {**SECRETS, "PATH": "/bin", "HOME": "/home/u", "LC_ALL": "C", "TZ": "UTC",
            "PGPASSFILE": "/home/u/.pgpass"}
    env = childenv.environment({"PGHOST": "db"}, inherit=("PGPASSFILE",), base=base)
    assert env == {"PATH": "/bin", "HOME": "/home/u", "LC_ALL": "C", "TZ": "UTC",
                   "PGPASSFILE": "/home/u/.pgpass", "PGHOST": "db"}


def test_a_child_sees_no_secret_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    out = childenv.run([sys.executable, "-c", "import os; print(sorted(os.environ))"],
                       capture_output=True, text=True, check=True).stdout
    assert not set(eval(out)) & set(SECRETS)


def test_secret_file_is_0600_in_memory_and_readable_only_by_the_child_given_it(
        tmp_path: Path) -> None:
    reader = "import sys; print(open(sys.argv[1]).read(), end='')"
    with childenv.SecretFile(b"s3cr3t\n") as secret:
        assert secret.fd is not None
        st = os.fstat(secret.fd)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert "memfd:" in os.readlink(f"/proc/self/fd/{secret.fd}")  # never in a directory
        given = childenv.run([sys.executable, "-c", reader, secret.path], secrets=[secret],
                             capture_output=True, text=True)
        not_given = childenv.run([sys.executable, "-c", reader, secret.path],
                                 capture_output=True, text=True)
        fd = secret.fd
    assert given.stdout == "s3cr3t\n"
    assert not_given.returncode != 0 and "s3cr3t" not in not_given.stdout
    with pytest.raises(OSError):
        os.fstat(fd)  # closed on exit
    with pytest.raises(ValueError, match="closed"):
        childenv.start(["true"], secrets=[secret])


def test_pg_passfile_escapes_and_refuses_what_it_cannot_carry() -> None:
    assert passfile(r"a:b\c") == b"*:*:*:*:a\\:b\\\\c\n"
    with pytest.raises(ValueError, match="line break"):
        passfile("a\nb")


def test_mysql_option_file_quotes_the_password_and_never_reads_the_environment() -> None:
    target = Target(scheme="mariadb", host="db", port=3306, user="u", database="d",
                    password='p"#\\\n x', tls="verify-full", ca_file="/ca.pem")
    text = option_file(target).decode()
    assert 'password="p\\"#\\\\\\n x"' in text.splitlines()
    assert "ssl-verify-server-cert" in text and 'ssl-ca="/ca.pem"' in text


@pytest.mark.parametrize(("url", "config_name", "expected"), [
    ("postgresql://u:pw@h/db", None, "process list"),
    ("mongodb://u:pw@h1:1,h2:2/db", None, "--password-file FILE, SAFEHOLD_PASSWORD"),
    ("mariadb://u:pw@h/db", "shop", "'shop' in the config file"),
    ("postgresql://u@h/db", None, None),
    ("postgresql://u:@h/db", None, None),
    ("sqlite:///var/lib/app.db", None, None),
])
def test_url_password_warning(url: str, config_name: str | None, expected: str | None) -> None:
    warning = url_password_warning(url, config_name=config_name)
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and expected in warning and "pw" not in warning.split()


SPAWNERS = {"subprocess": {"Popen", "run", "call", "check_call", "check_output", "getoutput",
                           "getstatusoutput"},
            "os": {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp",
                   "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp",
                   "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                   "spawnvp", "spawnvpe"},
            "pty": {"spawn", "fork"}, "multiprocessing": {"Process", "Pool"}}


def _spawns(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.attr in SPAWNERS.get(func.value.id, ()):
            found.append(f"{func.value.id}.{func.attr} (line {node.lineno})")
        if isinstance(node, ast.ImportFrom) and node.module in SPAWNERS:
            found += [f"from {node.module} import {a.name} (line {node.lineno})"
                      for a in node.names if a.name in SPAWNERS[node.module]]
    return found


def test_the_runner_starts_processes_only_through_childenv() -> None:
    offenders = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if path == Path(childenv.__file__).resolve() or "controller" in path.parts:
            continue
        spawns = _spawns(ast.parse(path.read_text(), str(path)))
        if spawns:
            offenders[str(path.relative_to(SOURCE))] = spawns
    assert offenders == {}, "start child processes with safehold.engines.childenv"
    assert _spawns(ast.parse("import subprocess\nsubprocess.run(['x'])"))  # the check bites
    assert not _spawns(ast.parse("import subprocess\nx: subprocess.Popen[bytes]"))  # types ok
