"""Reaching Google Cloud Storage: ``gs://`` URLs, credentials, the client, and what the SDK's
exceptions mean (transient or permanent). The object layout is in :mod:`safehold.storage.gcs`.
"""

from __future__ import annotations

import http.client
import os
from typing import Any

import google.auth
import google.auth.exceptions
import requests
import urllib3.exceptions
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.resumable_media import DataCorruption

from safehold.storage.base import StorageAuthError, StorageError, TransientStorageError
from safehold.storage.cloud import parse_store_url

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_TRANSIENT_CODES = {408, 429}
_TRANSPORT_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    google.auth.exceptions.TransportError,
    DataCorruption,  # a download whose checksum did not match: read it again
)


def classify(exc: BaseException, what: str, url: str) -> StorageError | None:
    """The StorageError an SDK or transport exception means (None: not a storage error).

    404s are not classified here: only the caller knows whether an object, a part or the
    bucket is missing.
    """
    if isinstance(exc, google.auth.exceptions.RefreshError):
        if getattr(exc, "retryable", False):
            return TransientStorageError(f"cannot {what} on {url}: {exc}")
        return StorageError(
            f"cannot {what} on {url}: no access token could be obtained ({exc}); check"
            " GOOGLE_APPLICATION_CREDENTIALS or the workload identity binding")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return TransientStorageError(f"cannot {what} on {url}: {exc!r}")
    if not isinstance(exc, gexc.GoogleAPICallError):
        return None
    code = exc.code or 0
    message = exc.message or str(exc)
    if code in _TRANSIENT_CODES or code >= 500:
        return TransientStorageError(f"cannot {what} on {url}: {code} {message}")
    if code == 401:
        return StorageAuthError(
            f"Google Cloud Storage rejected the credentials for {url} (401: {message}): check"
            " that GOOGLE_APPLICATION_CREDENTIALS names a valid service-account key, or that"
            " the Kubernetes service account is bound through workload identity")
    if code == 403:
        return StorageAuthError(
            f"Google Cloud Storage denied {what} on {url} (403: {message}): grant the runner's"
            " identity roles/storage.objectAdmin on the bucket (the service account of"
            " GOOGLE_APPLICATION_CREDENTIALS, or the one bound through workload identity)")
    return StorageError(f"cannot {what} on {url}: {code} {message}")


def parse_url(url: str) -> tuple[str, str, str | None, dict[str, Any]]:
    """``gs://bucket/prefix?endpoint=…`` -> bucket, prefix, endpoint, tuning keywords."""
    parsed = parse_store_url(
        url, "gs", example="gs://bucket/optional/prefix", options=("endpoint",),
        credentials="GOOGLE_APPLICATION_CREDENTIALS or a workload identity")
    bucket = parsed.bucket
    if not (3 <= len(bucket) <= 222) or not bucket.replace("-", "").replace("_", "").replace(
            ".", "").isalnum() or bucket != bucket.lower() or not bucket[0].isalnum():
        raise ValueError(
            f"{bucket!r} in {url!r} is not a valid bucket name: 3-63 lowercase letters, digits,"
            " '-', '_' or '.', starting and ending with a letter or digit")
    return bucket, parsed.prefix, parsed.options.get("endpoint"), parsed.tuning


def make_client(endpoint: str | None) -> storage.Client:
    """A client with application default credentials, or anonymous for an emulator."""
    from google.auth.credentials import AnonymousCredentials

    endpoint = endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or None
    if endpoint:
        return storage.Client(project="safehold", credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                              client_options={"api_endpoint": endpoint})
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key_file and not os.path.isfile(key_file):
        origin = os.environ.get("SAFEHOLD_GCS_KEY_ORIGIN")  # set by the operator's Jobs
        raise StorageError(
            f"GOOGLE_APPLICATION_CREDENTIALS names {key_file}, which does not exist"
            + (f": it is {origin}, which is missing; add the service-account key file to the"
               " Secret under that key (kubectl create secret generic NAME"
               " --from-file=gcs.json=KEY.json)" if origin else
               ": point it at a service-account key file, or unset it to use workload"
               " identity"))
    try:
        credentials, project = google.auth.default(scopes=SCOPES)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        if key_file:
            raise StorageError(f"the Google Cloud credentials in {key_file} are not usable:"
                               f" {exc}") from exc
        raise StorageError(
            "no Google Cloud credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a"
            " service-account key file, or run on GKE with workload identity (the pod's"
            " Kubernetes service account bound to a Google service account)") from exc
    return storage.Client(project=project, credentials=credentials)
