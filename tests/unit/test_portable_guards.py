"""The ``portable`` selection (tests/infra/portable.py) holds only what can run on macOS and
Windows: a listed file uses none of the POSIX-only constructs below without a guard, and every
file that marks itself ``portable`` is listed (unit.yml collects only the listed files).

Constructs: ``os.geteuid``/``getuid``/``getgid``/``fork``, ``signal.SIGKILL``/``SIGSTOP``/
``SIGCONT``, mode bits read back (``.st_mode``), the Linux-only commands ``systemd-analyze`` and
``unshare``, ``kill_cli_when`` (it SIGKILLs), and a ``sqlite://``/``file://`` URL built by
hand around a path (``f"sqlite://{path}"`` is ``sqlite://C:\\...`` on Windows: use
``sqlite_url`` / ``Path.as_uri()``).

Guards: the ``posix_only``/``linux_only``/``not_portable`` marks of tests/infra/portable.py on
the test, its class or the module (``pytestmark``); an ``if`` on the platform around the
construct (``sys.platform``, ``os.name``, ``WINDOWS``/``POSIX``/``LINUX``); or such an ``if``
in the function that calls ``pytest.skip``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.infra.portable import PORTABLE

ROOT = Path(__file__).resolve().parents[2]
POSIX_ATTRS = {("os", "geteuid"), ("os", "getuid"), ("os", "getgid"), ("os", "fork"),
               ("signal", "SIGKILL"), ("signal", "SIGSTOP"), ("signal", "SIGCONT")}
LINUX_COMMANDS = {"systemd-analyze", "unshare"}
POSIX_HELPERS = {"kill_cli_when"}
GUARD_MARKS = {"posix_only", "linux_only", "not_portable"}
PLATFORM_NAMES = {"WINDOWS", "POSIX", "LINUX"}


def _is_platform_test(node: ast.expr) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and (
                (isinstance(sub.value, ast.Name) and (sub.value.id, sub.attr) in
                 {("sys", "platform"), ("os", "name")}) or sub.attr in PLATFORM_NAMES):
            return True
        if isinstance(sub, ast.Name) and sub.id in PLATFORM_NAMES:
            return True
    return False


def _calls_guard_mark(node: ast.expr) -> bool:
    return any(isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
               and sub.func.id in GUARD_MARKS for sub in ast.walk(node))


def _skips_on_platform(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """The function starts with (or holds at its top level) ``if <platform>: pytest.skip(...)``."""
    return any(isinstance(stmt, ast.If) and _is_platform_test(stmt.test) and any(
        isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
        and sub.func.attr == "skip" for s in stmt.body for sub in ast.walk(s))
        for stmt in fn.body)


def _construct(node: ast.AST) -> str | None:
    """What makes ``node`` POSIX- or Linux-only, or None."""
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in POSIX_ATTRS:
            return f"{node.value.id}.{node.attr}"
        if node.attr == "st_mode":
            return "mode bits (.st_mode)"
    if isinstance(node, ast.Constant) and node.value in LINUX_COMMANDS:
        return f"the {node.value} command"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in POSIX_HELPERS:
        return f"{node.func.id} (SIGKILL)"
    if isinstance(node, ast.JoinedStr):
        for part, after in zip(node.values, node.values[1:], strict=False):
            if isinstance(part, ast.Constant) and isinstance(after, ast.FormattedValue) \
                    and str(part.value).endswith(("sqlite://", "file://")):
                return f"a {part.value.rsplit(' ', 1)[-1]}{{...}} URL built by hand"
    return None


def unguarded(source: str) -> list[str]:
    """``line: construct`` for each POSIX-only construct in ``source`` without a guard."""
    tree = ast.parse(source)
    found: list[str] = []
    module_guarded = any(
        isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                             for t in stmt.targets)
        and _calls_guard_mark(stmt.value) for stmt in tree.body)

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            guarded = guarded or any(_calls_guard_mark(d) for d in node.decorator_list)
            if not isinstance(node, ast.ClassDef):
                guarded = guarded or _skips_on_platform(node)
        elif isinstance(node, ast.If | ast.IfExp) and _is_platform_test(node.test):
            guarded = True
        if not guarded and (what := _construct(node)) is not None:
            found.append(f"{getattr(node, 'lineno', '?')}: {what}")
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, module_guarded)
    return found


# this file names the constructs it looks for, so it is the one listed file not checked
@pytest.mark.parametrize("path", sorted(PORTABLE - {"tests/unit/test_portable_guards.py"}))
def test_a_portable_file_guards_its_posix_only_constructs(path: str) -> None:
    file = ROOT / path
    assert file.is_file(), f"{path} is listed in tests/infra/portable.py but does not exist"
    found = unguarded(file.read_text(encoding="utf-8"))
    assert not found, (
        f"{path} is portable (unit.yml runs it on macOS and Windows) but uses, without a guard:\n"
        + "\n".join(found) + "\nmark the test posix_only/linux_only/not_portable"
        " (tests/infra/portable.py), or build URLs with sqlite_url()/Path.as_uri()")


def test_every_file_marked_portable_is_listed() -> None:
    """unit.yml collects only the listed files: a file marked ``portable`` but not listed would
    run on Linux here and never on macOS or Windows."""
    marked = sorted(
        f.relative_to(ROOT).as_posix() for f in (ROOT / "tests").rglob("test_*.py")
        if re.search(r"^pytestmark = pytest\.mark\.portable", f.read_text(encoding="utf-8"),
                     re.M))
    assert marked, "no file marks itself portable: the search below looks at nothing"
    assert [f for f in marked if f not in PORTABLE] == []


# -- the check bites ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "import os\ndef test_x():\n    assert os.geteuid() == 0\n",
    "import signal\ndef test_x(p):\n    p.send_signal(signal.SIGKILL)\n",
    "def test_x(db):\n    run('backup', '-t', f'sqlite://{db}')\n",
    "def test_x(tmp_path):\n    run('list', '-r', f'-r file://{tmp_path}/repo')\n",
    "import shutil\ndef test_x():\n    assert shutil.which('systemd-analyze')\n",
    "def test_x(p):\n    assert p.stat().st_mode & 0o777 == 0o600\n",
    "def helper():\n    subprocess.run(['unshare', '--user', 'sh'])\n",
    "def test_x():\n    kill_cli_when(['backup'], {}, lambda: True, timeout=1)\n",
])
def test_the_check_finds_an_unguarded_construct(source: str) -> None:
    assert len(unguarded(source)) == 1, source


@pytest.mark.parametrize("source", [
    "import os\n@not_portable('root')\ndef test_x():\n    assert os.geteuid() == 0\n",
    "import signal\n@posix_only('SIGKILL')\ndef test_x(p):\n    p.send_signal(signal.SIGKILL)\n",
    "import signal\n@posix_only('SIGKILL')\nclass TestX:\n    def test_x(self, p):\n"
    "        p.send_signal(signal.SIGKILL)\n",
    "pytestmark = posix_only('mode bits')\ndef mode(p):\n    return p.stat().st_mode\n",
    "def test_x(p):\n    if not WINDOWS:\n        assert p.stat().st_mode & 0o777 == 0o600\n",
    "import sys\ndef test_x():\n    if sys.platform != 'linux':\n        pytest.skip('Linux')\n"
    "    subprocess.run(['unshare', 'sh'])\n",
    "def test_x(db):\n    run('backup', '-t', sqlite_url(db), '-r', (db.parent / 'r').as_uri())\n",
    "def test_x():\n    run('check', '-t', 'sqlite:///x.db', '-r', f'file:///r{1}')\n",
])
def test_the_check_accepts_a_guarded_or_portable_use(source: str) -> None:
    assert unguarded(source) == [], source
