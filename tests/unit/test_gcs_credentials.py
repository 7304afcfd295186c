"""GCS credentials the runner cannot use are named with the fix, before any request: a key
file that is missing (in Kubernetes: the credentials Secret lacks the key gcs.json, which the
Job mounts as an optional file) or that is not a service-account key."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.storage.base import StorageError
from safehold.storage.gcs_connect import make_client


def test_a_missing_key_file_names_the_secret_and_key(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    missing = tmp_path / "gcs" / "gcs.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    monkeypatch.setenv("SAFEHOLD_GCS_KEY_ORIGIN", "Secret gcs-creds, key gcs.json")
    with pytest.raises(StorageError) as err:
        make_client(None)
    assert str(missing) in str(err.value) and "Secret gcs-creds, key gcs.json" in str(err.value)
    assert "--from-file=gcs.json=" in str(err.value)

    monkeypatch.delenv("SAFEHOLD_GCS_KEY_ORIGIN")  # the CLI: the variable itself is the fix
    with pytest.raises(StorageError, match="unset it to use workload identity"):
        make_client(None)


def test_a_key_file_that_is_not_a_key_says_so(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    junk = tmp_path / "gcs.json"
    junk.write_text('{"type": "nothing-google-knows"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(junk))
    with pytest.raises(StorageError, match=f"credentials in {junk} are not usable"):
        make_client(None)
