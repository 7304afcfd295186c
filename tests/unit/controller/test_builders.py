"""Golden files for every manifest the operator creates (SAFEHOLD_UPDATE_GOLDEN=1 rewrites)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from safehold.api.backup import Backup
from safehold.api.restore import Restore
from safehold.api.target import BackupTarget
from safehold.api.task import parse_task
from safehold.controller.builders import tasks
from safehold.controller.builders.keysecret import key_secret
from safehold.controller.builders.serviceaccount import runner_service_account
from safehold.controller.settings import Settings
from tests.unit.controller import samples
from tests.unit.controller.golden import assert_golden

SETTINGS = Settings(runner_image="safehold/runner:test")


def _pg() -> BackupTarget:
    return BackupTarget.from_body(samples.target())


def _sqlite() -> BackupTarget:
    return BackupTarget.from_body(samples.target("app", samples.SQLITE_TARGET_SPEC))


def _jobs() -> dict[str, dict[str, Any]]:
    bk = Backup.from_body(samples.backup())
    bid = "20261202T101112.123456Z"
    return {
        "job-check-postgresql": tasks.check_job(_pg(), "check-orders-x", SETTINGS),
        "job-backup-postgresql": tasks.backup_job(bk, _pg(), bid, "backup-orders-x", SETTINGS),
        "job-backup-sqlite": tasks.backup_job(
            Backup.from_body(samples.backup(target="app")), _sqlite(), bid, "backup-app-x",
            SETTINGS),
        "job-delete-postgresql": tasks.delete_job(bk, _pg(), bid, "delete-orders-x", SETTINGS),
        "job-adopt-sqlite": tasks.adopt_job(_sqlite(), "adopt-app-x", SETTINGS),
        "job-adopt-page-postgresql": tasks.adopt_job(_pg(), "adopt-orders-x", SETTINGS,
                                                     after=bid),
        "job-rewrap-postgresql": tasks.rewrap_job(_pg(), "rewrap-orders-x", SETTINGS),
        "job-restore-postgresql-new-db": tasks.restore_job(
            Restore.from_body(samples.restore()), _pg(), None, bid, "restore-x", SETTINGS),
    }


@pytest.mark.parametrize("name", sorted(_jobs()))
def test_job_golden(name: str) -> None:
    assert_golden(name, _jobs()[name])


def test_service_account_and_key_secret_golden() -> None:
    assert_golden("serviceaccount", runner_service_account("safehold-runner", "shop"))
    assert_golden("key-secret", key_secret("app-key", "shop", "app", key_id="00c0ffee",
                                           key=bytes(range(32))))


@pytest.mark.parametrize("name", sorted(_jobs()))
def test_jobs_pass_the_restricted_pod_security_standard(name: str) -> None:
    pod = _jobs()[name]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    for v in pod["volumes"]:
        assert set(v) & {"emptyDir", "secret", "persistentVolumeClaim"}, v  # no hostPath


@pytest.mark.parametrize("name", sorted(_jobs()))
def test_secrets_only_by_reference(name: str) -> None:
    container = _jobs()[name]["spec"]["template"]["spec"]["containers"][0]
    literal = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert set(literal) <= {"SAFEHOLD_TASK", "GOOGLE_APPLICATION_CREDENTIALS",
                            "SAFEHOLD_GCS_KEY_ORIGIN"}
    task = parse_task(literal["SAFEHOLD_TASK"])  # the runner's own parser accepts it
    text = json.dumps(task.model_dump(mode="json"))
    assert "password\":" not in text.replace("password_from", "")


def test_a_gcs_key_file_missing_from_its_secret_lets_the_pod_start_and_say_so() -> None:
    """The key file is an optional item: a Secret without gcs.json must not leave the pod in
    FailedMount until the Job's deadline; the runner names the Secret and key instead."""
    spec = dict(samples.PG_TARGET_SPEC, storage={
        "url": "gs://backups/prod", "credentialsSecretRef": {"name": "gcs-creds"}})
    pod = tasks.check_job(BackupTarget.from_body(samples.target(spec=spec)), "c",
                          SETTINGS)["spec"]["template"]["spec"]
    gcs = next(v for v in pod["volumes"] if v["name"].endswith("-gcs"))
    assert gcs["secret"]["secretName"] == "gcs-creds" and gcs["secret"]["optional"] is True
    assert gcs["secret"]["items"] == [{"key": "gcs.json", "path": "gcs.json"}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"].endswith("/gcs/gcs.json")
    assert env["SAFEHOLD_GCS_KEY_ORIGIN"] == "Secret gcs-creds, key gcs.json"


def test_runner_security_context_override_cannot_escalate() -> None:
    spec = dict(samples.PG_TARGET_SPEC, runner={"securityContext": {
        "runAsUser": 1000, "allowPrivilegeEscalation": True, "privileged": True}})
    target = BackupTarget.from_body(samples.target(spec=spec))
    sc = tasks.check_job(target, "c", SETTINGS)["spec"]["template"]["spec"]["containers"][0][
        "securityContext"]
    assert sc["runAsUser"] == 1000
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False


def test_job_lifecycle_settings() -> None:
    job = _jobs()["job-backup-postgresql"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 21600
    assert job["ttlSecondsAfterFinished"] == 86400
    task = parse_task(job["template"]["spec"]["containers"][0]["env"][0]["value"])
    assert task.kind == "backup" and task.backup_id == "20261202T101112.123456Z"


def test_generated_key_secret_is_read_by_the_runner(tmp_path: Any) -> None:
    """Contract: the Secret the operator generates, mounted as a volume, is a key dir the
    runner's load_key_dir accepts, with the generated key active."""
    import base64

    from safehold.controller.builders.keysecret import generated_key_secret
    from safehold.pipeline.tasks import load_key_dir

    secret = generated_key_secret("app-key", "shop", "app")
    assert not secret["metadata"].get("ownerReferences")
    for name, value in secret["data"].items():  # what the kubelet writes into the volume
        (tmp_path / name).write_bytes(base64.b64decode(value))
    keks = load_key_dir(tmp_path)
    assert len(keks) == 1
    other = generated_key_secret("app-key", "shop", "app")
    assert other["data"] != secret["data"]  # random every time


def test_a_physical_target_asks_its_backup_and_check_jobs_for_physical() -> None:
    def task_of(job: dict[str, Any]) -> Any:
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        return parse_task(next(e["value"] for e in env if e["name"] == "SAFEHOLD_TASK"))

    target = BackupTarget.from_body(samples.target(spec=dict(samples.PG_TARGET_SPEC,
                                                             method="physical")))
    bk = Backup.from_body(samples.backup())
    backup = task_of(tasks.backup_job(bk, target, "20261202T101112.123456Z", "b", SETTINGS))
    assert backup.method == "physical"
    assert task_of(tasks.check_job(target, "c", SETTINGS)).method == "physical"
    assert task_of(tasks.check_job(_pg(), "c", SETTINGS)).method is None  # logical: as before
