from __future__ import annotations

import re

import pytest

from safehold.controller import naming
from safehold.controller.settings import Settings, SettingsError

LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def test_job_name_is_deterministic_and_a_dns_label() -> None:
    uid = "5b3c1c0e-8d7f-4a57-9a3e-0c1f2d3e4f50"
    a = naming.job_name("backup", "orders-20261202", uid)
    assert a == naming.job_name("backup", "orders-20261202", uid)
    assert a.startswith("backup-orders-20261202-")
    assert LABEL.fullmatch(a) and len(a) <= 63


def test_job_name_differs_by_uid_purpose_and_salt() -> None:
    names = {
        naming.job_name("backup", "x", "u1"),
        naming.job_name("backup", "x", "u2"),  # a re-created object of the same name
        naming.job_name("delete", "x", "u1"),
        naming.job_name("check", "x", "u1", salt=1),
        naming.job_name("check", "x", "u1", salt=2),
    }
    assert len(names) == 5


def test_long_and_odd_names_are_hashed_into_63_chars() -> None:
    long = "a" * 200 + ".b_c"
    name = naming.job_name("restore", long, "uid")
    assert len(name) <= 63 and LABEL.fullmatch(name)
    assert naming.job_name("restore", long + "x", "uid2") != name


def test_backup_id_is_stable_in_the_runners_format() -> None:
    one = naming.backup_id("2026-12-02T10:11:12Z", "uid-1")
    assert one == naming.backup_id("2026-12-02T10:11:12Z", "uid-1")
    assert re.fullmatch(r"20261202T101112\.\d{6}Z", one)
    assert one != naming.backup_id("2026-12-02T10:11:12Z", "uid-2")


def test_settings_defaults_and_namespaces() -> None:
    s = Settings.from_env({})
    assert s.clusterwide and s.job_retries == 2 and s.image_pull_policy == "IfNotPresent"
    assert Settings.from_env({"SAFEHOLD_NAMESPACES": "*"}).clusterwide
    assert Settings.from_env({"SAFEHOLD_NAMESPACES": "shop"}).namespaces == ("shop",)
    assert Settings.from_env({"SAFEHOLD_NAMESPACES": "shop, crm"}).namespaces == ("shop", "crm")


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("SAFEHOLD_NAMESPACES", "Shop", "namespace name"),
        ("SAFEHOLD_IMAGE_PULL_POLICY", "sometimes", "Always"),
        ("SAFEHOLD_JOB_RETRIES", "-1", "greater than or equal"),
        ("SAFEHOLD_JOB_TTL_SECONDS", "soon", "integer"),
    ],
)
def test_bad_settings_name_the_variable(var: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({var: value})
    assert var in str(err.value) and words in str(err.value)


def test_kopf_args_follow_the_namespaces_setting() -> None:
    from safehold.controller.main import kopf_args

    assert kopf_args(Settings())[-1] == "--all-namespaces"
    chart = kopf_args(Settings(), ["--namespace=shop", "--liveness=http://0.0.0.0:8080/healthz"])
    assert chart[-2:] == ["--namespace=shop", "--liveness=http://0.0.0.0:8080/healthz"]
    assert "--all-namespaces" not in chart
    assert kopf_args(Settings.from_env({"SAFEHOLD_NAMESPACES": "a,b"}))[-2:] == [
        "--namespace=a", "--namespace=b"]
