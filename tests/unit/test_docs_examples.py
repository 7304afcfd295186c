"""Every example in docs/ and README.md is checked by a test: this one, or the test it names.

Fenced blocks, by language:

* ``yaml``: Kubernetes objects are validated offline — Safehold's kinds against the generated
  CRD schema (unknown fields refused, as ``kubectl apply --validate=strict`` does) and the
  operator's pydantic model, built-in kinds with kubernetes-validate; a Safehold config file is
  checked by ``safehold config validate``; a spec fragment marked
  ``<!-- fragment-of: Kind -->`` is merged into a minimal object of that kind and validated.
* ``json`` parses; ``python`` compiles.
* ``sh``: every ``safehold ...`` command must parse against the click CLI (commands, options,
  choices, values); ``make X`` must name a Makefile target; ``scripts/...``/``bash scripts/...``
  must exist. A block with any other command must say which test runs it:
  ``<!-- tested-by: tests/path.py::test_name -->`` (the file and the test must exist), or why
  none can here: ``<!-- not-run-here: reason -->``.
* ``<!-- schematic -->`` marks a block that shows a shape with placeholders, not an example.
* ``text`` and unlabelled blocks are output or diagrams and are not checked.

The marker is an HTML comment on the line before the fence (a blank line between is allowed).
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from safehold.api import crdgen
from safehold.api.backup import Backup
from safehold.api.restore import Restore
from safehold.api.schedule import BackupSchedule
from safehold.api.target import BackupTarget
from safehold.cli.main import GLOBAL_OPTIONS, cli, hoist_global_options

REPO = Path(__file__).resolve().parents[2]
# docs/examples/ holds manifests that e2e/ applies in a cluster; docs/reference/ is generated
PAGES = sorted([*REPO.glob("docs/*.md"), REPO / "README.md"])
K8S_VERSION = "1.34.0"
MODELS: dict[str, Any] = {"BackupTarget": BackupTarget, "Backup": Backup, "Restore": Restore,
                          "BackupSchedule": BackupSchedule}
SHELLS = ("sh", "bash", "shell", "console")
SKIPPED = ("", "text")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*([\w-]+)(?::\s*(.*?))?\s*-->\s*\n(?:[ \t]*\n)?$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    marker: str | None
    marker_arg: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            before = text[max(0, match.start() - 400):match.start()]
            mark = MARKER.search(before)
            out.append(Block(page, text.count("\n", 0, match.start()) + 1, match.group(1),
                             match.group(2), mark.group(1) if mark else None,
                             (mark.group(2) or "") if mark else ""))
    return out


BLOCKS = [b for b in blocks() if b.lang not in SKIPPED]


def _ids(block: Block) -> str:
    return block.where


# ------------------------------------------------------------------------------- Kubernetes

def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused (kubectl's strict field validation)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if "properties" in out and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


CRD_SCHEMAS = {k.kind: _strict(crdgen.crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
               for k in crdgen.KINDS}


def validate_object(obj: dict[str, Any]) -> None:
    """Raise if the object would not be accepted (offline)."""
    assert isinstance(obj.get("metadata", {}).get("name"), str), "metadata.name is missing"
    kind = obj.get("kind")
    if obj.get("apiVersion") == f"{crdgen.GROUP}/{crdgen.VERSION}" and kind in CRD_SCHEMAS:
        jsonschema.validate(obj, CRD_SCHEMAS[kind])
        MODELS[kind].model_validate(obj)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


MINIMAL: dict[str, dict[str, Any]] = {
    "BackupTarget": {"engine": "sqlite", "sqlite": {"claimName": "data", "path": "/data/app.db"},
                     "storage": {"url": "s3://backups/app"}, "encryption": {"generateKey": True}},
    "Backup": {"targetRef": {"name": "app"}},
    "Restore": {"source": {"backupRef": {"name": "app-1"}},
                "destination": {"targetRef": {"name": "app"}}},
    "BackupSchedule": {"targetRef": {"name": "app"}, "full": "0 2 * * *"},
}


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def _wrap(kind: str, fragment: dict[str, Any]) -> dict[str, Any]:
    obj = {"apiVersion": f"{crdgen.GROUP}/{crdgen.VERSION}", "kind": kind,
           "metadata": {"name": "example", "namespace": "shop"}, "spec": MINIMAL[kind]}
    return _merge(obj, fragment)


def test_minimal_objects_are_valid_and_a_typo_is_refused() -> None:
    # the checks above can fail: each minimal object passes, a misspelt field does not
    for kind in MINIMAL:
        validate_object(_wrap(kind, {}))
    with pytest.raises(jsonschema.ValidationError):
        validate_object(_wrap("Backup", {"spec": {"deletionPolicy": "Keep"}}))
    with pytest.raises(jsonschema.ValidationError):
        validate_object(_wrap("BackupSchedule", {"spec": {"retenton": {"keepLast": 3}}}))
    bare_on = yaml.safe_load("spec:\n  notifications:\n    slack:\n      webhookSecretRef:"
                             " {name: s, key: url}\n      on: [failure]\n")
    with pytest.raises(jsonschema.ValidationError):  # YAML 1.1 (kubectl's) reads `on` as true
        validate_object(_wrap("BackupTarget", bare_on))
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"},
                         "stringData": {"a": "b"}, "dta": {}})


# `config validate` also checks this machine: files the example names, variables it reads
ENVIRONMENTAL = re.compile(r"does not exist|is not set")


def check_config(text: str) -> None:
    """`safehold config validate` finds no problem but missing files/variables of this host."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "safehold.yaml"
        path.write_text(text)
        result = CliRunner().invoke(cli, ["-o", "json", "--config", str(path), "config",
                                          "validate"], standalone_mode=False)
        doc = json.loads(result.stdout[result.stdout.index("{"):])
        problems = [p for p in doc["problems"] if not ENVIRONMENTAL.search(p["message"])]
        assert not problems, f"safehold config validate: {problems}"


def test_config_check_refuses_a_misspelt_key() -> None:
    with pytest.raises(AssertionError, match="pasword_file"):
        check_config('targets:\n  app: {url: "sqlite:///a.db", pasword_file: x}\n')


CONFIG_KEYS = {"targets", "repositories", "log", "audit", "notifications", "profiles"}


def check_yaml(block: Block) -> None:
    docs = [d for d in yaml.safe_load_all(block.body) if d is not None]
    assert docs, "empty yaml block"
    if block.marker == "fragment-of":
        assert block.marker_arg in MINIMAL, f"fragment-of names an unknown kind {block.marker_arg}"
        for doc in docs:
            validate_object(_wrap(block.marker_arg, doc))
        return
    if all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs):
        for doc in docs:
            validate_object(doc)
        return
    if len(docs) == 1 and isinstance(docs[0], dict) and set(docs[0]) <= CONFIG_KEYS:
        check_config(block.body)
        return
    raise AssertionError("a yaml block that is neither Kubernetes objects nor a safehold config:"
                         " mark it <!-- fragment-of: Kind --> or <!-- tested-by: ... -->")


# ------------------------------------------------------------------------------------ shell

def commands(script: str) -> list[list[str]]:
    """Simple commands of a shell block: continuations joined, comments, heredoc bodies and
    control operators dropped, command substitutions left as words."""
    lines: list[str] = []
    heredoc = None
    for raw in script.replace("\\\n", " ").splitlines():
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        found = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", raw)
        if found:
            heredoc = found.group(1)
        lines.append(raw)
    out: list[list[str]] = []
    pending = ""
    for line in lines:
        pending += line
        try:  # a quoted string may go on over lines
            tokens = list(_lexer(pending))
        except ValueError:
            pending += "\n"
            continue
        pending = ""
        words: list[str] = []
        redirect = False
        for token in tokens:
            if redirect:  # the file of a redirection is no command
                redirect = False
                continue
            if token and set(token) <= set(";&|<>()"):
                if "<" in token or ">" in token:
                    redirect = True
                    continue
                if words:
                    out.append(words)
                words = []
                continue
            words.append(token)
        if words:
            out.append(words)
    return out


def _lexer(line: str) -> shlex.shlex:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return lexer


def _program(words: list[str]) -> list[str]:
    """The command without leading VAR=value assignments, sudo or time."""
    while words and (re.match(r"^[A-Za-z_]\w*=", words[0]) or words[0] in ("sudo", "time")):
        words = words[1:]
    return words


def check_safehold(args: list[str]) -> None:
    """Parse a safehold command line against the click CLI without running it."""
    args = hoist_global_options(args)
    cmd: click.Command = cli
    ctx = click.Context(cli, info_name="safehold", resilient_parsing=False)
    while True:
        parser = cmd.make_parser(ctx)
        opts, rest, _ = parser.parse_args(list(args))
        _check_values(cmd, opts)
        if not isinstance(cmd, click.Group):
            declared = [p for p in cmd.params if isinstance(p, click.Argument)]
            most = sum(p.nargs for p in declared) if all(p.nargs > 0 for p in declared) else None
            assert most is None or len(rest) <= most, f"unexpected arguments {rest}"
            _check_required(cmd, opts)
            return
        if not rest:
            return
        name, args = rest[0], rest[1:]
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"no command {ctx.command_path} {name}"
        cmd, ctx = sub, click.Context(sub, info_name=name, parent=ctx)


def _check_values(cmd: click.Command, opts: dict[str, Any]) -> None:
    for param in cmd.params:
        value = opts.get(param.name or "")
        if value is None or param.name == "help":
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for one in values:
            if isinstance(param.type, click.Choice) and not (one.startswith("$") or "<" in one):
                choices = [str(c) for c in param.type.choices]
                ok = (one in choices if param.type.case_sensitive
                      else one.lower() in (c.lower() for c in choices))
                assert ok, f"{param.opts[0]} {one!r} is not one of {choices}"


def _check_required(cmd: click.Command, opts: dict[str, Any]) -> None:
    for param in cmd.params:
        if param.required and isinstance(param, click.Option) and opts.get(param.name) is None:
            assert param.envvar, f"{cmd.name}: {param.opts[0]} is required"


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, re.M))


BUILTINS = {".", "source", "export", "cd", "echo", "mkdir"}


def check_shell(block: Block) -> list[str]:
    """Check what can be checked here; return the commands that need a named test."""
    others = []
    for words in commands(block.body):
        words = _program(words)
        if not words:
            continue
        prog, args = words[0], words[1:]
        if prog == "safehold":
            try:
                check_safehold(args)
            except (click.UsageError, AssertionError) as exc:
                raise AssertionError(f"`safehold {' '.join(args)}`: {exc}") from None
        elif prog == "make":
            targets = [a for a in args if not a.startswith("-") and "=" not in a]
            missing = set(targets) - _makefile_targets()
            assert not missing, f"`make {' '.join(args)}`: no Makefile target {sorted(missing)}"
        elif prog in BUILTINS:
            continue
        elif prog.endswith("pytest"):  # the tests themselves: what they name must exist
            for arg in (a for a in args if not a.startswith("-")):
                assert (REPO / arg.split("::")[0]).exists(), f"`pytest {arg}`: no such test"
        elif prog == "scripts/cluster" and args[:1] == ["exec"] and "--" in args:
            inner = _program(args[args.index("--") + 1:])
            if inner and inner[0] not in BUILTINS:
                others.append(" ".join(inner))
        elif prog.startswith("scripts/") or (prog == "bash" and args[:1]
                                             and args[0].startswith("scripts/")):
            path = prog if prog.startswith("scripts/") else args[0]
            assert (REPO / path).exists(), f"`{' '.join(words)}`: {path} does not exist"
        else:
            others.append(" ".join(words))
    return others


def test_the_shell_checks_can_fail() -> None:
    assert commands("a x \\\n  y # c\nb | c && d > f\ncat <<EOF\nsafehold nope\nEOF\n") == [
        ["a", "x", "y"], ["b"], ["c"], ["d"], ["cat"]]
    check_safehold(["backup", "-t", "sqlite:///a.db", "-r", "file:///b", "--type", "incremental"])
    check_safehold(["list", "--repo", "file:///b", "--output", "json"])
    for bad in (["backup", "-t", "x", "-r", "y", "--typo", "full"],
                ["backup", "-t", "x", "-r", "y", "--type", "weekly"],
                ["nosuchcommand"], ["keys", "nosuch"], ["backup", "-r", "y"],
                ["list", "-r"]):
        with pytest.raises((click.UsageError, AssertionError)):
            check_safehold(bad)


# ---------------------------------------------------------------------------------- markers

def check_marker(block: Block) -> None:
    if block.marker == "tested-by":
        assert block.marker_arg, "tested-by names no test"
        for ref in (r.strip() for r in block.marker_arg.split(",")):
            path, _, name = ref.partition("::")
            assert (REPO / path).is_file(), f"tested-by: {path} does not exist"
            if name:
                source = (REPO / path).read_text()
                assert re.search(rf"^(async )?def {re.escape(name)}\(", source, re.M), (
                    f"tested-by: {path} has no test {name}")
    elif block.marker == "not-run-here":
        assert len(block.marker_arg) > 10, "not-run-here needs the reason"
    elif block.marker not in (None, "schematic", "fragment-of"):
        raise AssertionError(f"unknown marker <!-- {block.marker} -->")


def test_docs_have_examples_and_markers_are_found() -> None:
    langs = {b.lang for b in BLOCKS}
    assert {"yaml", "sh"} <= langs
    assert any(b.marker == "tested-by" for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=_ids)
def test_every_example_is_checked(block: Block) -> None:
    try:
        check_marker(block)
        if block.marker == "schematic":
            return
        if block.lang == "yaml":
            check_yaml(block)
        elif block.lang == "json":
            json.loads(block.body)
        elif block.lang == "python":
            compile(block.body, block.where, "exec")
            assert block.marker in ("tested-by", "not-run-here"), "python needs tested-by"
        elif block.lang in SHELLS:
            others = check_shell(block)
            assert not others or block.marker in ("tested-by", "not-run-here"), (
                f"{others[0]!r} is run by no test named here: add <!-- tested-by:"
                " tests/...::test_... --> before the block (or <!-- not-run-here: why -->)")
        elif block.marker != "not-run-here":  # e.g. ```bat: nothing here can run it
            raise AssertionError(f"no check for ```{block.lang} blocks: mark it")
    except Exception as exc:  # name the block in every failure
        raise AssertionError(f"{block.where} (```{block.lang}): {exc}") from exc


def test_global_options_are_known_to_the_checker() -> None:
    assert {"--output", "--config"} <= set(GLOBAL_OPTIONS)
