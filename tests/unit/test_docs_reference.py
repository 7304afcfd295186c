"""docs/reference/ is generated from the code (`make docs`): a stale page, a field or command
missing from it, or output that depends on the terminal fails here."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from safehold import docsgen
from safehold.api import crdgen
from safehold.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
PAGES = docsgen.generate()


def test_reference_pages_are_up_to_date() -> None:
    stale = docsgen.stale(REPO / "docs" / "reference")
    assert not stale, (f"docs/reference/{', '.join(stale)} differ from what the code generates:"
                       " run `make docs` and commit docs/reference/")


def test_check_mode_reports_a_stale_page(tmp_path: Path) -> None:
    assert docsgen.main(["--out", str(tmp_path)]) == 0
    assert docsgen.main(["--out", str(tmp_path), "--check"]) == 0
    page = tmp_path / "cli.md"
    page.write_text(page.read_text().replace("--lock-wait", "--lock-wiat"))
    assert docsgen.main(["--out", str(tmp_path), "--check"]) == 1
    (tmp_path / "crds.md").unlink()
    assert docsgen.stale(tmp_path) == ["cli.md", "crds.md"]


def _fields(schema: dict, path: str) -> list[str]:
    out = [path]
    for name, prop in schema.get("properties", {}).items():
        out += _fields(prop, f"{path}.{name}")
    for key, mark in (("items", "[]"), ("additionalProperties", "[*]")):
        child = schema.get(key)
        if isinstance(child, dict):
            out += [p for p in _fields(child, f"{path}{mark}") if p != f"{path}{mark}"]
    return out


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_every_crd_field_has_a_row_with_its_enum_and_default(kind: crdgen.Kind) -> None:
    root = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    page = PAGES["crds.md"]
    section = page.split(f"\n## {kind.kind}\n", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ", 1)[0].removeprefix("| ").strip("`"): line
            for line in section.splitlines() if line.startswith("| `")}
    for part in ("spec", "status"):
        for path in _fields(root["properties"][part], part):
            assert path in rows, f"{kind.kind} {path} has no row in docs/reference/crds.md"
    # spot checks that the cells carry what the schema says
    if kind.kind == "Backup":
        assert "`Retain`, `Delete`" in rows["spec.deletionPolicy"]
        assert "| `Retain` |" in rows["spec.deletionPolicy"]


def _paths(cmd: click.Command, path: str) -> list[str]:
    out = [path]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):  # the top group loads its commands lazily
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{path} {name}"
            if not sub.hidden:
                out += _paths(sub, f"{path} {name}")
    return out


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    page = PAGES["cli.md"]
    for path in _paths(cli, "safehold"):
        assert f"\n## {path}\n" in page, f"`{path}` is missing from docs/reference/cli.md"
    backup = page.split("\n## safehold backup\n", 1)[1].split("\n## ", 1)[0]
    backup_cmd = cli.get_command(click.Context(cli), "backup")
    assert backup_cmd is not None
    for opt in backup_cmd.params:
        for name in opt.opts:
            assert name in backup, f"safehold backup {name} is missing from its section"


def test_cli_reference_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    assert docsgen.cli_reference() == PAGES["cli.md"]
