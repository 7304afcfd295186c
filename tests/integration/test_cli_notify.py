"""Slack notifications of a standalone `safehold backup` (config file's notifications.slack),
against the local Slack webhook stand-in (tests/infra/slackhook.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from tests.infra.slackhook import SlackHook, block_kit_problems
from tests.integration.cli_helpers import make_db, run

HOOK_ENV = "TEST_SLACK_WEBHOOK"


def setup(tmp_path: Path, slack: str, url: str) -> tuple[Path, str, dict[str, str]]:
    config = tmp_path / "safehold.yaml"
    config.write_text(f"notifications:\n  slack:\n{slack}")
    db = tmp_path / "app.db"
    make_db(db, rows=200)
    env = {"SAFEHOLD_CONFIG": str(config), "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "",
           "SAFEHOLD_PASSPHRASE": "", HOOK_ENV: url}
    return db, (tmp_path / "repo").as_uri(), env


def texts(body: Any) -> str:
    return json.dumps(body)


def backup(db: Path, repo: str, env: dict[str, str], *, ok: bool = True) -> Any:
    return run("backup", "-t", f"sqlite://{db}", "-r", repo, "--no-encryption", env=env, ok=ok)


def test_success_and_failure_are_sent_when_asked(tmp_path: Path, slack_hook: SlackHook) -> None:
    db, repo, env = setup(tmp_path, f"    webhook_url_env: {HOOK_ENV}\n"
                                    "    on: [failure, success]\n", slack_hook.url)
    backup(db, repo, env)
    assert len(slack_hook.delivered) == 1
    body = slack_hook.delivered[0]
    assert block_kit_problems(body) == []
    assert "Backup completed" in texts(body) and "app" in texts(body)

    failed = backup(tmp_path / "missing.db", repo, env, ok=False)
    assert failed.exit_code == Exit.NOT_FOUND  # the backup's own code, notification or not
    assert len(slack_hook.delivered) == 2
    assert "Backup failed" in texts(slack_hook.delivered[1])
    assert "missing" in texts(slack_hook.delivered[1])


def test_only_failures_by_default_and_from_a_webhook_file(tmp_path: Path,
                                                           slack_hook: SlackHook) -> None:
    hook_file = tmp_path / "webhook"
    hook_file.write_text(slack_hook.url + "\n")
    db, repo, env = setup(tmp_path, f"    webhook_file: {hook_file}\n", "")
    backup(db, repo, env)
    assert slack_hook.received == []  # success is not in the default `on: [failure]`
    assert backup(tmp_path / "missing.db", repo, env, ok=False).exit_code == Exit.NOT_FOUND
    assert len(slack_hook.delivered) == 1 and "Backup failed" in texts(slack_hook.delivered[0])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_undeliverable_message_is_a_warning_not_an_exit_code(tmp_path: Path,
                                                                slack_hook: SlackHook) -> None:
    slack_hook.script = [(500, {}, "boom")] * 10  # every try fails
    db, repo, env = setup(tmp_path, f"    webhook_url_env: {HOOK_ENV}\n    on: [success]\n",
                          slack_hook.url)
    result = backup(db, repo, env)  # exit 0 all the same
    assert "warning: Slack notification not sent" in result.stderr
    assert "server_error" in result.stderr
    assert len(slack_hook.received) >= 2  # it was retried

    env[HOOK_ENV] = f"http://127.0.0.1:{_closed_port()}/hook"
    result = backup(db, repo, env)
    assert "warning: Slack notification not sent: connection" in result.stderr

    env[HOOK_ENV] = ""
    result = backup(db, repo, env)
    assert f"environment variable {HOOK_ENV}" in result.stderr and "is not set" in result.stderr

    env[HOOK_ENV] = "not a url"
    result = backup(db, repo, env)
    assert "not an http(s) URL" in result.stderr and "not a url" not in result.stderr


@pytest.mark.parametrize(("slack", "expected"), [
    ("    webhook_url: https://hooks.slack.com/services/T/B/SECRET\n",
     "never lives in the config file"),
    (f"    webhook_url_env: {HOOK_ENV}\n    webhook_file: /etc/hook\n", "exactly one of"),
    ("    on: [failure]\n", "exactly one of"),
    (f"    webhook_url_env: {HOOK_ENV}\n    on: [sometimes]\n", "'sometimes' is not allowed"),
    ("    webhook_file: /nonexistent/hook\n", "/nonexistent/hook does not exist"),
    ("    webhook_url_env: SAFEHOLD_TEST_UNSET_HOOK\n", "SAFEHOLD_TEST_UNSET_HOOK is not set"),
])
def test_config_validate_names_the_problem(tmp_path: Path, slack: str, expected: str) -> None:
    _, _, env = setup(tmp_path, slack, "https://hooks.example/x")
    result = run("config", "validate", env=env, ok=False)
    assert result.exit_code == Exit.USAGE
    assert expected in result.output and "notifications.slack" in result.output
    assert "SECRET" not in result.output


def test_config_validate_accepts_a_good_section(tmp_path: Path) -> None:
    _, _, env = setup(tmp_path, f"    webhook_url_env: {HOOK_ENV}\n    on: [failure, success]\n",
                      "https://hooks.example/x")
    assert "ok" in run("config", "validate", env=env).stdout


def test_the_environment_overrides_the_events(tmp_path: Path, slack_hook: SlackHook) -> None:
    db, repo, env = setup(tmp_path, f"    webhook_url_env: {HOOK_ENV}\n    on: [failure]\n",
                          slack_hook.url)
    env["SAFEHOLD_NOTIFICATIONS__SLACK__ON"] = "failure,success"
    backup(db, repo, env)
    assert len(slack_hook.delivered) == 1 and "Backup completed" in texts(slack_hook.delivered[0])
