"""What the scenarios need from a mode (``local`` or ``kind``): a cluster with the chart's
operator, a namespace, kubectl, the variables the example manifests take, and ways to write and
read the databases and the object stores."""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.procs import REPO

EXAMPLES = REPO / "docs" / "examples"
STORES = ("s3", "gcs", "azure")
BUCKET = "safehold-backups"  # the bucket / container the examples name
PREFIX = "examples"
# the claim docs/examples/postgresql/pointintime-restore.yaml's claimTemplate makes
PITR_CLAIM = "postgresql-pitr-restore-data"
# placeholders a scenario fills for one step (not the mode): the point-in-time Restores' time
STEP_VARIABLES = ("RESTORE_TIME",)
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def render(path: Path, variables: dict[str, str]) -> str:
    """The manifest at ``path`` with its ``${NAME}`` placeholders filled (envsubst's syntax);
    KeyError naming a placeholder the mode does not provide."""
    return string.Template(path.read_text()).substitute(variables)


@dataclass
class System:
    """One mode's cluster, as the scenarios use it."""

    mode: str
    namespace: str  # where the examples are applied (restricted Pod Security Standard)
    variables: dict[str, str]  # what envsubst fills in: SAFEHOLD_HOST_IP, *_PORT
    engines: tuple[str, ...]  # docs/examples/<engine>/ applied in this mode
    kubectl: Callable[..., str]  # kubectl(*args, input=None) -> stdout; fails on an error
    sql: Callable[[str, str, str], str]  # sql(engine, database, statements) -> output
    sqlite: Callable[[str, str], str]  # sqlite(action, file name on the claim) -> output
    store_endpoints: dict[str, str]  # store -> base URL reachable from this test process
    operator_namespace: str  # where the chart's operator Pod runs
    # restored_postgres(claim): a PostgreSQL server of the source's major started on the data
    # directory a Restore wrote into ``claim`` (pgdata), as psql(database, statements); stopped
    # on leaving
    restored_postgres: Callable[[str], AbstractContextManager[Callable[[str, str], str]]]
    # for the closing note: the images' sizes, helm's output
    info: dict[str, str] = field(default_factory=dict)

    def apply(self, relpath: str, **step: str) -> str:
        """``envsubst < docs/examples/<relpath> | kubectl -n NS apply -f -``; ``step`` fills
        the placeholders of one step (STEP_VARIABLES, e.g. RESTORE_TIME)."""
        return self.kubectl("-n", self.namespace, "apply", "-f", "-",
                            input=render(EXAMPLES / relpath, {**self.variables, **step}))

    def diagnose(self, plural: str) -> str:
        """What a timed-out wait needs to be understood: the objects' conditions, the runner
        Jobs and Pods, the namespace's recent events and the operator's last log lines."""
        def run(*args: str) -> str:
            try:
                return self.kubectl(*args)
            except Exception as exc:  # one part missing must not hide the others
                return f"({' '.join(args)}: {exc})"

        conditions = {n: (o.get("status") or {}).get("conditions")
                      for n, o in self.objects(plural).items()}
        ns = ("-n", self.namespace)
        return "\n".join([
            f"{plural} conditions: {json.dumps(conditions, indent=1)}",
            run(*ns, "get", "jobs,pods", "-o", "wide"),
            run(*ns, "get", "events", "--sort-by=.lastTimestamp"),
            run("-n", self.operator_namespace, "logs", "--tail=200", "-l",
                "app.kubernetes.io/name=safehold"),
        ])

    def objects(self, plural: str, selector: str | None = None) -> dict[str, dict[str, Any]]:
        """Every object of ``plural`` in the namespace, by name."""
        extra = ["-l", selector] if selector else []
        out = self.kubectl("-n", self.namespace, "get", plural, "-o", "json", *extra)
        return {o["metadata"]["name"]: o for o in json.loads(out)["items"]}


def eventually(probe: Callable[[], Any], what: str, timeout: float = 600.0,
               interval: float = 2.0, explain: Callable[[], str] | None = None) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``, the last value
    and what ``explain`` says then (the cluster's side of the story)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    story = ""
    if explain is not None:
        try:
            story = "\n" + explain()
        except Exception as exc:  # the failure itself matters more than its explanation
            story = f"\n(no explanation: {exc})"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         f" (last: {last!r}){story}")


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The target's Ready condition once decided (True or False)."""
    return next((c for c in (obj.get("status") or {}).get("conditions", [])
                 if c["type"] == "Ready" and c["status"] != "Unknown"), None)


# ------------------------------------------------------------------ object stores

def make_buckets(endpoints: dict[str, str]) -> None:
    """The bucket/container ``safehold-backups`` in each store (the examples name it)."""
    import contextlib

    s3, gcs, azure = _clients(endpoints)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    from google.api_core.exceptions import Conflict

    with contextlib.suppress(Conflict):
        gcs.create_bucket(BUCKET)
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        azure.create_container(BUCKET)


def drop_buckets(endpoints: dict[str, str]) -> None:
    """Empty and delete what make_buckets made (best effort: the servers are shared)."""
    import contextlib

    s3, gcs, azure = _clients(endpoints)
    with contextlib.suppress(Exception):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
        s3.delete_bucket(Bucket=BUCKET)
    with contextlib.suppress(Exception):
        gcs.bucket(BUCKET).delete(force=True)
    with contextlib.suppress(Exception):
        azure.delete_container(BUCKET)


def stored_keys(endpoints: dict[str, str], store: str, target: str) -> list[str]:
    """Object keys under ``examples/<target>/`` in ``store``'s bucket."""
    s3, gcs, azure = _clients(endpoints)
    prefix = f"{PREFIX}/{target}/"
    if store == "s3":
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for p in pages for o in p.get("Contents", [])]
    if store == "gcs":
        return [b.name for b in gcs.list_blobs(BUCKET, prefix=prefix)]
    return [b.name for b in azure.get_container_client(BUCKET).list_blobs(
        name_starts_with=prefix)]


def read_object(endpoints: dict[str, str], store: str, key: str) -> bytes | None:
    """One object of ``store``'s bucket, or None when it is not there."""
    s3, gcs, azure = _clients(endpoints)
    try:
        if store == "s3":
            return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        if store == "gcs":
            return bytes(gcs.bucket(BUCKET).blob(key).download_as_bytes())
        return bytes(azure.get_container_client(BUCKET).download_blob(key).readall())
    except Exception:  # diagnostics only: absent and unreadable alike
        return None


def repository_records(endpoints: dict[str, str], store: str, target: str) -> dict[str, Any]:
    """What the repository says of ``target`` (for a failure's message): its policy record and
    the namespace, time and size of each manifest, so a conflict names who wrote what."""
    import json

    out: dict[str, Any] = {}
    policy = read_object(endpoints, store, f"{PREFIX}/{target}/target.json")
    out["target.json"] = json.loads(policy) if policy else None
    for key in stored_keys(endpoints, store, target):
        if key.endswith("/manifest.json"):
            raw = read_object(endpoints, store, key)
            doc = json.loads(raw) if raw else {}
            out[key] = {k: doc.get(k) for k in ("namespace", "started_at", "type", "repo_id")}
    return out


def _clients(endpoints: dict[str, str]) -> tuple[Any, Any, Any]:
    import boto3
    from azure.storage.blob import BlobServiceClient
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    s3 = boto3.client("s3", endpoint_url=endpoints["s3"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    gcs = storage.Client(project="safehold-e2e", credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                         client_options={"api_endpoint": endpoints["gcs"]})
    azure = BlobServiceClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoints['azure']}/devstoreaccount1;")
    return s3, gcs, azure
