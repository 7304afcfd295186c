"""In a runner Job the engines' password advice names the BackupTarget's Secret, not CLI options.

The engines write "--password-file, SAFEHOLD_PASSWORD or PGPASSWORD" (engines.common
.password_sources); the operator's task says where the user set the password (passwordOrigin,
names only); run-task swaps one for the other, so the Ready condition names the Secret.
"""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from pymongo.errors import OperationFailure

from safehold.api.common import ErrorInfo
from safehold.api.result import TaskResult
from safehold.api.target import BackupTargetSpec, BackupTargetStatus
from safehold.api.task import CheckTask, TaskDatabase, parse_task, task_to_json
from safehold.controller.builders import wiring
from safehold.engines.base import ConnectionOptions
from safehold.engines.common import PASSWORD_SOURCES, password_sources
from safehold.engines.mongodb.conn import MongoTarget
from safehold.engines.mongodb.conn import classify as mongo_classify
from safehold.engines.mysql.conn import classify as mysql_classify
from safehold.engines.postgres.conn import classify as pg_classify
from safehold.engines.postgres.conn import parse_target as pg_target
from safehold.pipeline.tasks import name_wired_secrets

ORIGIN = "the BackupTarget's connection.passwordSecretRef (Secret orders-db, key password)"


def engine_auth_messages() -> dict[str, str]:
    """What each server engine says when its login is refused (no server needed)."""
    pg = pg_classify("FATAL: password authentication failed for user \"backup\"",
                     pg_target("postgresql://backup@db:5432/orders", ConnectionOptions()))
    my = mysql_classify(pymysql.err.OperationalError(1045, "Access denied for user 'backup'"))
    mongo = mongo_classify(OperationFailure("Authentication failed.", code=18),
                           MongoTarget.parse("mongodb://backup@db:27017/orders", "x"))
    return {"postgresql": pg.message, "mysql": my.message, "mongodb": mongo.message}


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "mongodb"])
def test_every_engine_writes_the_phrase_run_task_replaces(engine: str) -> None:
    message = engine_auth_messages()[engine]
    assert PASSWORD_SOURCES.search(message), message
    result = TaskResult.failure("check", ErrorInfo(
        error_class="AuthenticationFailed", message=message, exit_code=6, transient=False))
    swapped = name_wired_secrets(result, check_task(password_origin=ORIGIN))
    assert swapped.error is not None
    assert ORIGIN in swapped.error.message
    for cli_word in ("--password-file", "SAFEHOLD_PASSWORD", "PGPASSWORD", "MYSQL_PWD"):
        assert cli_word not in swapped.error.message, swapped.error.message


def test_a_mongodb_user_without_password_is_told_where_to_put_it() -> None:
    with pytest.raises(ValueError) as err:
        MongoTarget.parse("mongodb://backup@db:27017/orders")
    assert PASSWORD_SOURCES.search(str(err.value)), err.value


def test_password_sources_phrases_all_match() -> None:
    for phrase in (password_sources(), password_sources("PGPASSWORD"),
                   password_sources("MYSQL_PWD", url=True)):
        assert PASSWORD_SOURCES.fullmatch(phrase), phrase
    assert password_sources("PGPASSWORD") == "--password-file, SAFEHOLD_PASSWORD or PGPASSWORD"


def check_task(**database: Any) -> CheckTask:
    return CheckTask(database=TaskDatabase(
        engine="postgresql", url="postgresql://backup@db:5432/orders", **database))


def test_without_an_origin_the_cli_advice_stays() -> None:
    message = engine_auth_messages()["postgresql"]
    result = TaskResult.failure("check", ErrorInfo(
        error_class="AuthenticationFailed", message=message, exit_code=6, transient=False))
    assert name_wired_secrets(result, check_task()) == result


def test_hint_and_problems_are_rewritten_too() -> None:
    cli = password_sources("PGPASSWORD")
    result = TaskResult.failure("check", ErrorInfo(
        error_class="CheckFailed", message=f"login refused; check {cli}", exit_code=6,
        hint=f"set {cli}", transient=False), problems=[f"login refused; check {cli}"])
    swapped = name_wired_secrets(result, check_task(password_origin=ORIGIN))
    assert swapped.error is not None
    assert swapped.error.message == f"login refused; check {ORIGIN}"
    assert swapped.error.hint == f"set {ORIGIN}"
    assert swapped.problems == [f"login refused; check {ORIGIN}"]


def target_spec(connection: dict[str, Any] | None = None, **spec: Any) -> BackupTargetSpec:
    body: dict[str, Any] = {"engine": "postgresql", "storage": {"url": "s3://b/p"},
                            "encryption": {"none": True}, **spec}
    if connection is not None:
        body["connection"] = {"host": "db", "database": "orders", "username": "backup",
                              **connection}
    return BackupTargetSpec.model_validate(body)


def test_the_operator_wires_where_the_password_was_set() -> None:
    db, _ = wiring.database(target_spec(
        {"passwordSecretRef": {"name": "orders-db", "key": "password"}}), "src")
    assert db.password_origin == ORIGIN
    db, _ = wiring.database(target_spec({}), "src")
    assert db.password_origin == \
        "the BackupTarget's connection.passwordSecretRef (none is set)"
    db, _ = wiring.database(target_spec(uriSecretRef={"name": "orders-url", "key": "uri"}),
                            "src")
    assert db.password_origin == \
        "the URL in the BackupTarget's connection.uriSecretRef (Secret orders-url, key uri)"
    # it travels in the task JSON the Job carries
    task = CheckTask(database=db)
    assert parse_task(task_to_json(task)) == task


def test_ready_condition_names_the_secret() -> None:
    message = engine_auth_messages()["postgresql"]
    result = name_wired_secrets(TaskResult.failure("check", ErrorInfo(
        error_class="AuthenticationFailed", message=message, exit_code=6, transient=False)),
        check_task(password_origin=ORIGIN))
    status = BackupTargetStatus().checked(result, 1)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "AuthenticationFailed"
    assert "(Secret orders-db, key password)" in ready.message
    assert "--password-file" not in ready.message
