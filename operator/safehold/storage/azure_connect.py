"""Reaching Azure Blob Storage: ``az://`` URLs, the account, credentials, the client, and what
the SDK's exceptions mean (transient or permanent). The blob layout is in
:mod:`safehold.storage.azure`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from azure.core import exceptions as aexc
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.storage.blob import BlobServiceClient

from safehold.storage.base import (
    ObjectNotFound,
    StorageAuthError,
    StorageError,
    TransientStorageError,
)
from safehold.storage.cloud import parse_store_url
from safehold.storage.parts import MiB

_TRANSIENT_STATUS = {408, 429}
_CREDENTIAL_HELP = (
    "set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY (with ?account=NAME) or"
    " AZURE_STORAGE_SAS_TOKEN, or give the pod a managed/workload identity")
_PERMISSION_HELP = (
    "grant the identity 'Storage Blob Data Contributor' on the container, or use a SAS token"
    " with read, add, create, write, delete and list permissions")


def classify(exc: aexc.AzureError, what: str, key: str, url: str, container: str
              ) -> StorageError:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    code = str(getattr(code, "value", code) or "")
    if isinstance(exc, aexc.ClientAuthenticationError) and status is None:
        return StorageError(f"no Azure credential could be obtained for {url} ({exc.message});"
                            f" {_CREDENTIAL_HELP}")
    if isinstance(exc, (aexc.ServiceRequestError, aexc.ServiceResponseError,
                        aexc.IncompleteReadError, aexc.DecodeError)):
        return TransientStorageError(f"cannot {what} on {url}: {exc.message}")
    if code == "ContainerNotFound":
        return StorageError(f"container {container!r} does not exist (repository {url}): create"
                            f" it (az storage container create -n {container}) or fix the URL")
    if code == "BlobNotFound" or (status == 404 and not code):
        return ObjectNotFound(key)
    if code == "ConditionNotMet" or status == 412:
        return StorageError(f"cannot {what} on {url}: the blob was replaced while it was being"
                            " read; read it again")
    if status in (401, 403):
        if code == "AuthenticationFailed" or status == 401:
            return StorageAuthError(f"Azure rejected the credentials for {url} ({code or status}):"
                                " check the account key, SAS token or connection string (an"
                                f" expired SAS, a rotated key, a wrong clock); {_CREDENTIAL_HELP}")
        if code.startswith("AuthorizationPermission"):
            return StorageAuthError(f"Azure denied {what} on {url} ({code}): {_PERMISSION_HELP}")
        return StorageAuthError(  # e.g. AuthorizationFailure: a bad signature, or firewall rules
            f"Azure refused {what} on {url} ({code or status}): the credentials were rejected or"
            f" lack permission; check the account key, SAS token or connection string, and"
            f" {_PERMISSION_HELP}")
    if status is None or status in _TRANSIENT_STATUS or status >= 500:
        return TransientStorageError(f"cannot {what} on {url}: {code or status} {exc.message}")
    return StorageError(f"cannot {what} on {url}: {code or status} {exc.message}")


def parse_url(url: str) -> tuple[str, str, str | None, str | None, dict[str, Any]]:
    """``az://container/prefix?account=…&endpoint=…`` -> container, prefix, account, endpoint,
    tuning keywords."""
    parsed = parse_store_url(
        url, "az", example="az://container/optional/prefix?account=NAME",
        options=("account", "endpoint"), noun="container",
        credentials="AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN")
    container = parsed.bucket
    if (not 3 <= len(container) <= 63 or not container.replace("-", "").isalnum()
            or container != container.lower() or not container[0].isalnum()
            or "--" in container or container.endswith("-")):
        raise ValueError(
            f"{container!r} in {url!r} is not a valid container name: 3-63 lowercase letters,"
            " digits and single hyphens, starting and ending with a letter or digit")
    return (container, parsed.prefix, parsed.options.get("account"),
            parsed.options.get("endpoint"), parsed.tuning)


def _account_of(endpoint: str) -> str | None:
    """``NAME`` of https://NAME.blob.core.windows.net, or of http://host:port/NAME (Azurite)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    return parts.path.strip("/").split("/", 1)[0] or None


def make_service(account: str | None, endpoint: str | None, timeout: float = 120.0
                  ) -> BlobServiceClient:
    options: dict[str, Any] = {
        "retry_total": 0,  # retry_call is the policy
        "connection_timeout": 20, "read_timeout": timeout,
        # downloads hold one range of this size in memory at a time
        "max_single_get_size": 4 * MiB, "max_chunk_get_size": 4 * MiB,
    }
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        service = BlobServiceClient.from_connection_string(connection_string, **options)
        if account and service.account_name != account:
            raise ValueError(
                f"the repository URL names the account {account!r}, but"
                f" AZURE_STORAGE_CONNECTION_STRING is for {service.account_name!r}; make them"
                " agree or drop ?account= from the URL")
        return service
    account = account or os.environ.get("AZURE_STORAGE_ACCOUNT")
    account_url = endpoint or (f"https://{account}.blob.core.windows.net" if account else None)
    if account_url is None:
        raise ValueError("the az:// URL names no storage account: add ?account=NAME (or"
                         " ?endpoint=URL), set AZURE_STORAGE_ACCOUNT, or set"
                         " AZURE_STORAGE_CONNECTION_STRING")
    credential: Any
    if key := os.environ.get("AZURE_STORAGE_KEY"):
        name = account or _account_of(account_url)
        if not name:
            raise ValueError(f"AZURE_STORAGE_KEY needs the account name: add ?account=NAME to"
                             f" the URL (endpoint {account_url})")
        credential = AzureNamedKeyCredential(name, key)
    elif sas := os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
        credential = AzureSasCredential(sas.lstrip("?"))
    else:
        from azure.identity import DefaultAzureCredential  # heavy; only for identity auth

        credential = DefaultAzureCredential()
    return BlobServiceClient(account_url, credential=credential, **options)
