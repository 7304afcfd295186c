"""How a runner pod reaches a target's database, repository and keys — by reference only.

A target spec becomes two things: the task parts (URLs without secrets, and *where* each secret
is: a file path) and the :class:`Wiring` that puts those files there (Secret volumes with
``items``) or the storage credentials into the environment (``envFrom`` ``secretRef``). No
Secret value is ever read by the operator.

Mounts live under ``/var/run/safehold/<role>/`` so a restore's source and destination (two
targets in one pod) never collide.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from safehold.api.target import BackupTargetSpec
from safehold.api.task import SecretInput, TaskDatabase, TaskEncryption, TaskRepository, TaskTls
from safehold.controller.builders.job import Wiring

ROOT = "/var/run/safehold"
SECRET_MODE = 0o440  # readable by the runner's group (fsGroup), nobody else
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mongodb": 27017}
GCS_KEY = "gcs.json"
GCS_KEY_ORIGIN_ENV = "SAFEHOLD_GCS_KEY_ORIGIN"  # where the key file comes from, for errors


def _secret_file(volume: str, secret: str, key: str, path: str, mount: str, *,
                 optional: bool = False) -> Wiring:
    """One key of a Secret as a file. ``optional``: a missing Secret or key leaves the
    directory empty and the pod starts (the runner then says what is missing), instead of a pod
    stuck in FailedMount until the Job's deadline."""
    source: dict[str, Any] = {"secretName": secret, "defaultMode": SECRET_MODE,
                              "items": [{"key": key, "path": path}]}
    if optional:
        source["optional"] = True
    return Wiring(
        volumes=({"name": volume, "secret": source},),
        mounts=({"name": volume, "mountPath": mount, "readOnly": True},),
    )


def _names(secret: str, key: str) -> str:
    """How error hints name a Secret key the Job mounted (run-task puts it in place of the
    CLI's --password-file)."""
    return f"Secret {secret}, key {key}"


def database(spec: BackupTargetSpec, role: str, *, database: str | None = None
             ) -> tuple[TaskDatabase, Wiring]:
    """Where the database is (URL without secrets) and the wiring of its password/TLS files."""
    base = f"{ROOT}/{role}"
    wiring = Wiring()
    if spec.sqlite is not None:
        sq = spec.sqlite
        vol = f"{role}-sqlite"
        wiring += Wiring(
            volumes=({"name": vol, "persistentVolumeClaim": {"claimName": sq.claim_name}},),
            mounts=({"name": vol, "mountPath": sq.mount_path},),
        )
        return TaskDatabase(engine="sqlite", url=f"sqlite://{sq.path}"), wiring
    if spec.uri_secret_ref is not None:
        ref = spec.uri_secret_ref
        wiring += _secret_file(f"{role}-url", ref.name, ref.key, "url", f"{base}/url")
        return TaskDatabase(engine=spec.engine, url_from=SecretInput(file=f"{base}/url/url"),
                            password_origin=f"the URL in the BackupTarget's"
                            f" connection.uriSecretRef ({_names(ref.name, ref.key)})"), wiring
    conn = spec.connection
    assert conn is not None, "the model guarantees one of sqlite, uriSecretRef, connection"
    user = f"{quote(conn.username, safe='')}@" if conn.username else ""
    port = conn.port or DEFAULT_PORTS.get(spec.engine)
    host = f"[{conn.host}]" if ":" in conn.host else conn.host
    name = database or conn.database
    url = f"{spec.engine}://{user}{host}:{port}" + (f"/{quote(name, safe='')}" if name else "")
    password = None
    origin = "the BackupTarget's connection.passwordSecretRef (none is set)"
    if conn.password_secret_ref is not None:
        ref = conn.password_secret_ref
        wiring += _secret_file(f"{role}-password", ref.name, ref.key, "password",
                               f"{base}/password")
        password = SecretInput(file=f"{base}/password/password")
        origin = f"the BackupTarget's connection.passwordSecretRef ({_names(ref.name, ref.key)})"
    tls = None
    if conn.tls is not None:
        ca_file = cert_file = key_file = None
        if conn.tls.ca_secret_ref is not None:
            ref = conn.tls.ca_secret_ref
            wiring += _secret_file(f"{role}-tls-ca", ref.name, ref.key, "ca.crt", f"{base}/tls-ca")
            ca_file = f"{base}/tls-ca/ca.crt"
        if conn.tls.client_cert_secret_ref is not None:
            vol = f"{role}-tls-client"
            wiring += Wiring(
                volumes=({"name": vol, "secret": {
                    "secretName": conn.tls.client_cert_secret_ref.name,
                    "defaultMode": SECRET_MODE}},),
                mounts=({"name": vol, "mountPath": f"{base}/tls-client", "readOnly": True},),
            )
            cert_file, key_file = f"{base}/tls-client/tls.crt", f"{base}/tls-client/tls.key"
        tls = TaskTls(mode=conn.tls.mode, ca_file=ca_file, cert_file=cert_file,
                      key_file=key_file)
    return TaskDatabase(engine=spec.engine, url=url, password_from=password,
                        password_origin=origin, tls=tls), wiring


def repository(spec: BackupTargetSpec, role: str) -> tuple[TaskRepository, Wiring]:
    """The repository URL and its credentials (envFrom; a GCS key file as a volume)."""
    st = spec.storage
    wiring = Wiring()
    if st.credentials_secret_ref is not None:
        name = st.credentials_secret_ref.name
        wiring += Wiring(env_from=({"secretRef": {"name": name}},))
        if st.url.startswith("gs://"):
            mount = f"{ROOT}/{role}/gcs"
            wiring += _secret_file(f"{role}-gcs", name, GCS_KEY, GCS_KEY, mount, optional=True)
            wiring += Wiring(env=({"name": "GOOGLE_APPLICATION_CREDENTIALS",
                                   "value": f"{mount}/{GCS_KEY}"},
                                  {"name": GCS_KEY_ORIGIN_ENV, "value": _names(name, GCS_KEY)}))
    if st.volume is not None:
        vol = f"{role}-repo"
        path = urlsplit(st.url).path
        wiring += Wiring(
            volumes=({"name": vol, "persistentVolumeClaim": {"claimName": st.volume.claim_name}},),
            mounts=({"name": vol, "mountPath": path},),
        )
    return TaskRepository(url=st.url), wiring


def encryption(spec: BackupTargetSpec, role: str, generated_secret: str | None
               ) -> tuple[TaskEncryption, Wiring]:
    """The key Secret mounted whole (every key, and ``active``); or explicitly none."""
    enc = spec.encryption
    if enc.none:
        return TaskEncryption(mode="none"), Wiring()
    secret = enc.key_secret_ref.name if enc.key_secret_ref is not None else generated_secret
    assert secret, "generateKey targets pass the generated Secret's name"
    mount = f"{ROOT}/{role}/keys"
    vol = f"{role}-keys"
    return TaskEncryption(mode="keys", key_dir=mount), Wiring(
        volumes=({"name": vol, "secret": {"secretName": secret, "defaultMode": SECRET_MODE}},),
        mounts=({"name": vol, "mountPath": mount, "readOnly": True},),
    )


def overrides_of(spec: BackupTargetSpec) -> dict[str, Any]:
    """The target's runner overrides as plain Kubernetes JSON (empty when none)."""
    return spec.runner.to_kube() if spec.runner is not None else {}
