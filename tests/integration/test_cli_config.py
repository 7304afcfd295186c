"""`safehold config init|show|validate`, discovery, profiles and environment overrides, through
the real CLI with real SQLite backups; hostile input: malformed YAML, unknown keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safehold.cli.errors import Exit
from tests.infra.portable import not_portable, sqlite_url
from tests.integration.cli_helpers import make_db, run, run_json


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No config of the developer's: user and system dirs inside tmp_path, cwd empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return {"SAFEHOLD_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path / "user"),
            "XDG_CONFIG_DIRS": str(tmp_path / "system"), "SAFEHOLD_PROFILE": "",
            "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_NO_ENCRYPTION": "1", "SAFEHOLD_AUDIT__FILE": str(tmp_path / "audit.jsonl")}


def show(env: dict[str, str], *args: str) -> dict[str, dict[str, str]]:
    doc = run_json(*args, "config", "show", env=env)
    return {"_": doc, **{r["key"]: r for r in doc["values"]}}


def test_init_writes_a_valid_commented_file_and_never_overwrites(tmp_path: Path,
                                                                 env: dict[str, str]) -> None:
    target = tmp_path / "etc" / "safehold.yaml"
    run("config", "init", str(target), env=env)
    text = target.read_text()
    assert text.count("#") > 20 and "profiles:" in text and "SAFEHOLD_LOG__LEVEL" in text
    assert "ok" in run("--config", str(target), "config", "validate", env=env).stdout
    target.write_text("targets: {}\n# mine\n")
    refused = run("config", "init", str(target), env=env, ok=False)
    assert refused.exit_code == Exit.USAGE and "--force" in refused.output
    assert target.read_text() == "targets: {}\n# mine\n"  # untouched
    run("config", "init", str(target), "--force", env=env)
    assert target.read_text() == text
    # without PATH: the user config dir (platformdirs), which discovery then finds
    run("config", "init", env=env)
    user_file = tmp_path / "user" / "safehold" / "config.yaml"
    assert user_file.read_text() == text
    assert show(env)["_"]["file"] == str(user_file)


def test_discovery_order(tmp_path: Path, env: dict[str, str]) -> None:
    def write(path: Path, level: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"log: {{level: {level}}}\n")
        return path

    assert show(env)["_"]["file"] is None  # nothing anywhere: defaults
    system = write(tmp_path / "system" / "safehold" / "config.yaml", "error")
    assert show(env)["log.level"]["source"] == f"{system}:1"
    user = write(tmp_path / "user" / "safehold" / "config.yaml", "warning")
    assert show(env)["log.level"]["source"] == f"{user}:1"
    local = write(Path("safehold.yaml").resolve(), "debug")
    got = show(env)
    assert got["log.level"]["value"] == "debug" and got["_"]["found_by"] == \
        "working directory", local
    from_env = write(tmp_path / "env.yaml", "info")
    got = show({**env, "SAFEHOLD_CONFIG": str(from_env)})
    assert got["log.level"]["source"] == f"{from_env}:1"
    flag = write(tmp_path / "flag.yaml", "error")
    got = show({**env, "SAFEHOLD_CONFIG": str(from_env)}, "--config", str(flag))
    assert got["_"]["found_by"] == "--config" and got["log.level"]["value"] == "error"
    missing = run("--config", str(tmp_path / "nope.yaml"), "config", "show", env=env, ok=False)
    assert missing.exit_code == Exit.USAGE and "nope.yaml" in missing.output \
        and "config init" in missing.output


def test_profiles_env_overrides_provenance_and_redaction(tmp_path: Path,
                                                         env: dict[str, str]) -> None:
    db = tmp_path / "app.db"
    make_db(db, rows=50)
    cfg = tmp_path / "c.yaml"
    dev, prod_repo = (tmp_path / "dev-repo").as_uri(), (tmp_path / "prod-repo").as_uri()
    cfg.write_text(f"""\
targets:
  app: {{url: "{sqlite_url(db)}"}}
  orders: {{url: "postgresql://backup:hunter2@db:5432/orders"}}
repositories:
  main: {{url: "{dev}"}}
log:
  level: info
profiles:
  prod:
    repositories:
      main:
        url: "{prod_repo}"
    log: {{level: warning}}
""")
    env = {**env, "SAFEHOLD_CONFIG": str(cfg)}
    got = show(env)
    assert got["repositories.main.url"]["source"] == f"{cfg}:5"
    assert got["targets.orders.url"]["value"] == "postgresql://backup:***@db:5432/orders"
    assert "hunter2" not in json.dumps(got)
    assert got["log.file"]["source"] == "default"
    prod = show(env, "--profile", "prod")
    assert prod["repositories.main.url"]["value"] == prod_repo
    assert prod["repositories.main.url"]["source"] == f"{cfg}:12 (profile prod)"
    assert prod["log.level"] == {"key": "log.level", "value": "warning",
                                 "source": f"{cfg}:13 (profile prod)"}
    over = show({**env, "SAFEHOLD_PROFILE": "prod", "SAFEHOLD_LOG__LEVEL": "error"})
    assert over["log.level"]["source"] == "env SAFEHOLD_LOG__LEVEL"
    assert over["repositories.main.url"]["value"].endswith("prod-repo")
    # the profile is what a real backup uses
    run("--profile", "prod", "backup", "-t", "app", "-r", "main", env=env)
    assert (tmp_path / "prod-repo" / "app").is_dir() and not (tmp_path / "dev-repo").exists()
    unknown = run("--profile", "staging", "list", "-r", "main", env=env, ok=False)
    assert unknown.exit_code == Exit.USAGE and "'staging'" in unknown.output \
        and "prod" in unknown.output


def test_validate_reports_every_problem_with_line_and_fix(tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""\
targets:
  app:
    url: sqlite:///var/lib/app.db
    pasword_file: /run/secrets/db
repositories:
  local: {url: "file:///b", compresion: zstd}
log:
  level: verbose
  rotate: sometimes
colour: true
profiles:
  prod:
    repositories:
      local: {url: "/rel"}
""")
    env = {**env, "SAFEHOLD_CONFIG": str(cfg), "SAFEHOLD_LOG__LEVL": "debug"}
    result = run("config", "validate", env=env, ok=False)
    assert result.exit_code == Exit.USAGE
    out = result.stdout
    assert f"{cfg}:4: targets.app.pasword_file: unknown key 'pasword_file'" in out
    assert "did you mean 'password_file'?" in out
    assert f"{cfg}:6: repositories.local.compresion" in out and "'compression'" in out
    assert f"{cfg}:8: log.level: 'verbose' is not allowed" in out
    assert f"{cfg}:10: colour: unknown key" in out
    assert "env SAFEHOLD_LOG__LEVL: log.levl: unknown key" in out and "'level'" in out
    # beside the structural problems, what validates is checked too (every profile)
    assert f"{cfg}:14: profiles.prod.repositories.local.url: '/rel' is not a storage URL" in out
    doc = json.loads(run("config", "validate", "-o", "json", env=env, ok=False).stdout)
    assert len(doc["problems"]) == 6 and not doc["ok"]
    # every other command refuses the broken file, listing every problem too
    listed = run("list", "-r", "file:///b", env=env, ok=False)
    assert listed.exit_code == Exit.USAGE and "5 problems" in listed.output
    # once the structure is right, what cannot work is reported too
    cfg.write_text("""\
targets:
  app: {url: "app.db", password_file: /nonexistent/pw}
repositories:
  local: {url: "file:///b", compression: "zstd:99x"}
log: {rotate: sometimes}
""")
    out = run("config", "validate", env={**env, "SAFEHOLD_LOG__LEVL": ""}, ok=False).stdout
    assert f"{cfg}:2: targets.app.url: 'app.db' is not a database URL" in out
    assert "/nonexistent/pw does not exist" in out
    assert f"{cfg}:4: repositories.local.compression" in out
    assert f"{cfg}:5: log.rotate" in out and "4 problem(s)" in out


@pytest.mark.parametrize("text,line", [
    ("targets:\n  app: {url: 'x'\nrepositories: {}\n", 3),
    ("targets:\n\tapp: 1\n", 2),
    ("- just\n- a list\n", 1),
])
def test_malformed_config_names_the_line(tmp_path: Path, env: dict[str, str], text: str,
                                         line: int) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    env = {**env, "SAFEHOLD_CONFIG": str(cfg)}
    result = run("config", "validate", env=env, ok=False)
    assert result.exit_code == Exit.USAGE and f"{cfg}:{line}:" in result.stdout, result.output
    listed = run("list", "-r", "file:///b", env=env, ok=False)
    assert listed.exit_code == Exit.USAGE and f"{cfg}:{line}" in listed.output
    # commands that do not need the config still run
    run("keys", "generate", "--out", str(tmp_path / "k"), env=env)


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path, env: dict[str, str]) -> None:
    """Nested YAML aliases expand a few lines into billions of values: refused, not walked."""
    levels = ["a0: &a0 {url: 'sqlite:///x.db'}"] + [
        f"a{i}: &a{i} {{x: *a{i - 1}, y: *a{i - 1}, z: *a{i - 1}}}" for i in range(1, 25)]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("targets:\n" + "".join(f"  {line}\n" for line in levels))
    env = {**env, "SAFEHOLD_CONFIG": str(cfg)}
    result = run("config", "validate", env=env, ok=False)
    assert result.exit_code == Exit.USAGE and "aliases" in result.stdout
    listed = run("list", "-r", "file:///b", env=env, ok=False)
    assert listed.exit_code == Exit.USAGE and "aliases" in listed.output


@not_portable("root: makes a directory another OS user may not look into")
def test_a_config_this_os_user_cannot_read_is_a_usage_error() -> None:
    """Another OS user's environment (PostgreSQL's restore_command runs as the server's user,
    `sudo -E`): a user config dir it may not look into, or a config file it may not read, is
    named with the fix (exit 2), never reported as a bug in safehold."""
    import os
    import shutil
    import subprocess
    import tempfile

    from tests.infra.procs import as_test_user, unavailable
    from tests.integration.pg_wal_helpers import server_side_python

    if os.geteuid() != 0:  # a failure in CI, which runs as root; a skip elsewhere
        unavailable("another OS user", "needs root to make a directory another user's")
    base = Path(tempfile.mkdtemp(prefix="safehold-perm-"))  # pytest's tmp is root's only
    try:
        base.chmod(0o755)
        private = base / "root-only"
        (private / "safehold").mkdir(parents=True)
        private.chmod(0o700)
        env = {"PATH": os.environ["PATH"], "HOME": str(base), "XDG_CONFIG_HOME": str(private),
               "XDG_CONFIG_DIRS": str(base / "system"), "XDG_STATE_HOME": str(base / "st")}
        argv = as_test_user([server_side_python(base), "-m", "safehold.cli", "config", "show"])
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=base)
        assert proc.returncode == Exit.USAGE, proc.stderr
        assert f"{private}/safehold/config.yaml" in proc.stderr and "permission denied" in \
            proc.stderr and "SAFEHOLD_CONFIG" in proc.stderr and "bug" not in proc.stderr

        private.chmod(0o755)  # the directory is open now, the file in it is not
        (private / "safehold" / "config.yaml").write_text("log: {level: info}\n")
        (private / "safehold" / "config.yaml").chmod(0o600)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=base)
        assert proc.returncode == Exit.USAGE, proc.stderr
        assert "cannot read the config file" in proc.stderr and "user config dir" in \
            proc.stderr and "bug" not in proc.stderr
    finally:
        shutil.rmtree(base)
