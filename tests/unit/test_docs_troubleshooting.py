"""docs/troubleshooting.md names every error class, exit code and condition/event reason the code
can report, each with a cause and a fix: a class or reason added without a line there fails here.

Error classes are found by reading the source (every class deriving from SafeholdError, directly or
through another), reasons by reading the calls that set them (conditions, events, phase verdicts,
plan errors), so nothing has to be registered by hand.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.api.errors import Exit

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "safehold"
GUIDE = REPO / "docs" / "troubleshooting.md"

# call name -> index of the positional argument that is a reason
REASON_ARGS = {"set_condition": 3, "event": 1, "Verdict": 1, "Decision": 1, "Event": 0,
               "PlanError": 0, "_fail": 3, "_blocked": 1, "_set": 2, "condition_reason": 1}
# Kubernetes' own words the operator passes on (docs/troubleshooting.md explains them too)
FROM_KUBERNETES = {"OOMKilled", "Evicted", "DeadlineExceeded", "BackoffLimitExceeded", "Error"}
STATUSES = ("True", "False", "Unknown")
CAMEL = re.compile(r"^[A-Z][A-Za-z]+$")


def _trees(*parts: str) -> Iterator[tuple[Path, ast.Module]]:
    for part in parts:
        for path in sorted((PACKAGE / part).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def error_classes() -> dict[str, str]:
    """Every class that derives from SafeholdError anywhere in the package -> its module."""
    classes: list[tuple[str, str, set[str]]] = []
    for path, tree in _trees("."):
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes.append((node.name, _module(path), {_name(b) for b in node.bases}))
    found = {"SafeholdError": "safehold.api.errors"}
    grew = True
    while grew:
        new = {name: module for name, module, bases in classes
               if bases & found.keys() and name not in found}
        found.update(new)
        grew = bool(new)
    return found


def _strings(node: ast.expr | None) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def reasons() -> set[str]:
    """Every literal reason the operator (controller/ and the status models in api/) sets."""
    out: set[str] = set()
    for _, tree in _trees("controller", "api"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                index = REASON_ARGS.get(_name(node.func))
                if index is not None and len(node.args) > index:
                    out.update(_strings(node.args[index]))
                for kw in node.keywords:
                    if kw.arg == "reason":
                        out.update(_strings(kw.value))
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in ("reason", "why"):
                        out.update(_strings(node.value))
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for t, v in zip(target.elts, node.value.elts, strict=False):
                            if isinstance(t, ast.Name) and t.id == "reason":
                                out.update(_strings(v))
            elif isinstance(node, ast.Tuple) and len(node.elts) == 3:
                # (status, reason, message) of a condition
                first = list(_strings(node.elts[0]))
                second = list(_strings(node.elts[1]))
                if first and first[0] in STATUSES and second and second[0] not in STATUSES:
                    out.update(_strings(node.elts[1]))
    return {r for r in out if CAMEL.match(r)} | FROM_KUBERNETES


def _guide() -> str:
    return GUIDE.read_text()


def _documented(word: str, text: str) -> bool:
    """A table row that starts with the word in backticks, followed by two non-empty cells."""
    row = re.search(rf"^\| `{re.escape(word)}`[^|\n]*\|\s*[^|\s][^\n]*\|\s*[^|\s]", text, re.M)
    return row is not None


def _section(heading: str) -> str:
    """The guide's text from a heading (a regex of its start) to the next heading of its level."""
    text = _guide()
    found = re.search(rf"^{heading}.*$", text, re.M)
    if found is None:
        return ""
    level = heading.split(" ", 1)[0]
    rest = text[found.end():]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.M)
    return rest[:end.start()] if end else rest


def test_discovery_finds_what_is_known() -> None:
    # the scanners themselves can fail: they must see classes and reasons known to exist
    assert {"SafeholdError", "UsageError", "LeaseHeld", "BackupNotFound", "WrongKeyError",
            "NoSpaceError", "AuthenticationFailed", "DependentBackups"} <= set(CLASSES)
    assert {"CheckPassed", "CheckFailed", "BrokenChain", "NoBackups", "DryRun", "Suspended",
            "VerifyJobGone", "SlowerThanUsual", "DependentBackups", "CheckJobDeleted",
            "NotificationFailed"} <= reasons()


CLASSES = error_classes()


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_error_class_has_cause_and_fix_under_its_exit_code(name: str) -> None:
    cls = getattr(importlib.import_module(CLASSES[name]), name)
    code = int(cls.exit_code)
    assert _documented(name, _section(f"### Exit {code} — ")), (
        f"error class {name} (exit {code}) has no row in docs/troubleshooting.md: add"
        f" '| `{name}` | cause | fix |' under '### Exit {code} — ...'")


@pytest.mark.parametrize("code", list(Exit), ids=lambda c: c.name)
def test_every_exit_code_has_a_section(code: Exit) -> None:
    assert re.search(rf"^### Exit {int(code)} — ", _guide(), re.M), (
        f"exit code {int(code)} ({code.name}) has no '### Exit {int(code)} — ...' section in"
        " docs/troubleshooting.md")


@pytest.mark.parametrize("reason", sorted(reasons()))
def test_every_reason_has_cause_and_fix(reason: str) -> None:
    assert _documented(reason, _section("## Operator reasons")), (
        f"reason {reason} (set by the operator) has no row in docs/troubleshooting.md: add"
        f" '| `{reason}` | where | meaning | what to do |' to the reasons table")


def test_the_guide_names_nothing_that_no_longer_exists() -> None:
    known = set(CLASSES) | reasons()
    rows = re.findall(r"^\| `([A-Za-z]+)` \|", _guide(), re.M)
    gone = sorted(set(rows) - known)
    assert not gone, f"docs/troubleshooting.md has rows for {gone}, which the code never reports"
