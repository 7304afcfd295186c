"""A real single-node Kubernetes cluster: control plane + kube-scheduler, kube-proxy, a kubelet
with containerd + runc and the CNI bridge, inside the test network namespace.

Pods are real containers of images built here (``tests/infra/images.py``). Everything runs in
the namespace that ``tests/infra/netns.py`` created and moved the pytest process into: the
node's IP (:data:`NODE_IP`) sits on a veth interface there, Pods get addresses on the bridge
``shtest0`` (:data:`POD_CIDR`), Services get ClusterIPs in 10.0.0.0/24 (iptables rules of
kube-proxy in that namespace). Nothing listens outside it and no packet leaves it.

Use the ``cluster`` fixture (``tests/infra/fixtures_cluster.py``); outside pytest::

    NETNS.enter()
    with Node() as node:                 # ~10 s warm
        node.import_image(runner_image())
        print(node.kubeconfig)
    NETNS.leave()

State lives in a temp directory (containerd root, kubelet root, logs under ``logs/``). Cgroups go
under a cgroup root of its own (``/safehold-<pid>``) so that several nodes on one machine never
touch each other's Pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.infra.images import Image, pause_image
from tests.infra.kube import ControlPlane, kube_binary
from tests.infra.kube import missing_binaries as control_plane_missing
from tests.infra.netns import NETNS, NODE_IP, POD_CIDR, TestNetns
from tests.infra.procs import Server, ServerError, free_port, wait_until, which

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

NODE_NAME = "safehold-node"
BRIDGE = "shtest0"
CNI_BIN_DIR = Path("/usr/lib/cni")
KUBELET_PORT = 10250  # inside the namespace: no other kubelet can hold it
NODE_BINARIES = ("kube-scheduler", "kube-proxy", "kubelet")
HOST_TOOLS = ("containerd", "ctr", "runc", "iptables", "nsenter", "buildah", "ip")


def missing_binaries() -> list[str]:
    """What ``make infra`` has not installed yet for a node; empty when everything is there."""
    missing = control_plane_missing()
    missing += [f"{b} (scripts/build-kube.sh)" for b in NODE_BINARIES if not kube_binary(b)]
    missing += [f"{t} (scripts/infra/50-node-packages.sh)" for t in HOST_TOOLS if not which(t)]
    missing += [
        f"CNI plugin {p} (containernetworking-plugins)"
        for p in ("bridge", "host-local", "portmap", "loopback")
        if not (CNI_BIN_DIR / p).is_file()
    ]
    return missing


def _cgroup_hierarchies() -> list[Path]:
    """Every cgroup v1 hierarchy (and the v2 one) mounted under /sys/fs/cgroup."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # pure cgroup v2
        return [root]
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]


class Node:
    """The control plane plus a real node. Attributes after ``start()``: ``kubeconfig`` (admin),
    ``control_plane`` (``tests.infra.kube.ControlPlane``), ``ip``, ``name``, ``workdir``,
    ``containerd_socket``, ``logs``.
    """

    def __init__(
        self, workdir: Path | None = None, *, timeout: float = 180.0, netns: TestNetns = NETNS
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="safehold-node-"))
        self.timeout = timeout
        self.netns = netns
        self.name = NODE_NAME
        self.ip = NODE_IP
        self.containerd_socket = self.workdir / "containerd" / "containerd.sock"
        self.control_plane = ControlPlane(self.workdir / "control-plane", node_ip=NODE_IP)
        self.kubeconfig = self.control_plane.kubeconfig
        self.cgroup_root = f"/safehold-{os.getpid()}-{self.workdir.name[-8:]}"
        self._servers: dict[str, Server] = {}
        self._started_cp = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Node:
        """Bring everything up and wait until the node is Ready and kube-proxy has its rules."""
        missing = missing_binaries()
        if missing:
            raise ServerError("missing: " + "; ".join(missing))
        if not self.netns.active:
            raise ServerError(
                "the node runs only inside the test network namespace: use the `cluster` "
                "fixture, or call tests.infra.netns.NETNS.enter() first"
            )
        try:
            self._prepare()
            self._start_containerd()
            self.import_image(pause_image())
            self._started_cp = True
            self.control_plane.start()
            self._start_scheduler()
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_node_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Delete Pods, stop kubelet then containerd, unmount, stop the control plane.

        Idempotent, and safe after a failed start.
        """
        if "kube-scheduler" in self._servers:
            self._servers.pop("kube-scheduler").stop()
        if "kubelet" in self._servers:
            self._delete_all_pods()
        for name in ("kubelet", "kube-proxy", "containerd"):
            if name in self._servers:
                self._servers.pop(name).stop(timeout=20)
        self._kill_leftover_containers()
        self._unmount()
        if self._started_cp:
            self.control_plane.stop()
            self._started_cp = False
        self._remove_cgroup_root()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests

    def api_client(self) -> ApiClient:
        """A new kubernetes ApiClient authenticated as cluster admin (close it when done)."""
        return self.control_plane.api_client()

    def import_image(self, image: Image) -> None:
        """Import an OCI archive (``tests.infra.images``) into containerd's k8s.io namespace."""
        self._ctr("images", "import", str(image.archive))

    def pod_address(self, port: int) -> str:
        """``host:port`` at which a Pod reaches a server listening on 127.0.0.1:``port`` here.

        Every server started by the usual fixtures during a cluster session runs inside the
        test namespace; NODE_IP:port is rewritten to its 127.0.0.1:port (netns.expose_loopback).
        """
        return f"{self.ip}:{port}"

    @property
    def logs(self) -> dict[str, Path]:
        logs = dict(self.control_plane.logs)
        logs.update({name: s.log for name, s in self._servers.items()})
        return logs

    # ------------------------------------------------------------------ pieces

    def _ctr(self, *args: str, timeout: float = 300) -> str:
        argv = ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise ServerError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def _spawn(self, name: str, argv: list[str]) -> Server:
        server = Server(name, argv, log=self.workdir / "logs" / f"{name}.log")
        self._servers[name] = server
        return server

    def _prepare(self) -> None:
        w = self.workdir
        for d in ("containerd/root", "cni/net.d", "cni/ipam", "kubelet/root", "kubelet/pod-logs"):
            (w / d).mkdir(parents=True, exist_ok=True)
        # containerd's images and container filesystems in memory: imports unpack several times
        # faster than on this disk, and teardown is an unmount instead of deleting ~50k files
        root = w / "containerd" / "root"
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=700", "node", root], check=True)
        # cgroup root of our own in every hierarchy (cpuset children need cpus/mems first)
        for hierarchy in _cgroup_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((hierarchy / knob).read_text())
        # the bridge exists before the first Pod so the loopback DNAT can name it now
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        self.netns.expose_loopback(BRIDGE)
        # no nameserver: a Pod's DNS lookup fails at once instead of leaving the namespace
        (w / "resolv.conf").write_text("options ndots:1\n")
        (w / "cni" / "net.d" / "10-bridge.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "safehold-test",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(w / "cni" / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=1,
            )
        )
        c = w / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (c / "config.toml").write_text(
            f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[{cri}]
  sandbox_image = "{pause_image().ref}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{which("runc")}"
        Root = "{c / "runc"}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{w / "cni" / "net.d"}"
"""
        )

    def _start_containerd(self) -> None:
        config = self.workdir / "containerd" / "config.toml"
        containerd = self._spawn("containerd", ["containerd", "--config", str(config)])
        containerd.wait_ready(lambda: bool(self._ctr("version", timeout=5)), timeout=self.timeout)

    def _start_scheduler(self) -> None:
        kc = str(self.kubeconfig)
        port = free_port()
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(kube_binary("kube-scheduler")),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
            ],
        )
        scheduler.wait_ready(lambda: _healthz(port), timeout=self.timeout)

    def _start_kubelet(self) -> None:
        w = self.workdir
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(w / "kubelet" / "pod-logs"),
            "resolvConf": str(w / "resolv.conf"),
            "clusterDomain": "cluster.local",
            "evictionHard": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "localStorageCapacityIsolation": False,
            "oomScoreAdj": 0,
            "serializeImagePulls": False,
            "registerNode": True,
            "enforceNodeAllocatable": [],
            "maxPods": 30,
        }
        (w / "kubelet" / "config.yaml").write_text(json.dumps(config, indent=1))
        self._spawn(
            "kubelet",
            [
                str(kube_binary("kubelet")),
                f"--config={w / 'kubelet' / 'config.yaml'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={w / 'kubelet' / 'root'}",
                f"--hostname-override={self.name}",
                f"--node-ip={NODE_IP}",
            ],
        )

    def _start_kube_proxy(self) -> None:
        proxy = self._spawn(
            "kube-proxy",
            [
                str(kube_binary("kube-proxy")),
                f"--kubeconfig={self.kubeconfig}",
                f"--hostname-override={self.name}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_CIDR}",
                # conntrack sysctls are the machine's, not this namespace's: leave them alone
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                f"--healthz-bind-address=127.0.0.1:{free_port()}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
            ],
        )

        def has_rules() -> bool:
            out = subprocess.run(
                ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            return "default/kubernetes" in out

        proxy.wait_ready(has_rules, timeout=self.timeout)

    def _wait_node_ready(self) -> None:
        kubelet = self._servers["kubelet"]

        def ready() -> bool:
            status, body = self.control_plane.get(f"/api/v1/nodes/{self.name}")
            if status != 200:
                return False
            conditions = json.loads(body)["status"].get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        kubelet.wait_ready(ready, timeout=self.timeout)

    # ------------------------------------------------------------------ teardown

    def _delete_all_pods(self) -> None:
        """Delete every Pod at once and wait (bounded) until containerd runs no container."""
        with contextlib.suppress(Exception), self.api_client() as api:
            from kubernetes import client

            core = client.CoreV1Api(api)
            for pod in core.list_pod_for_all_namespaces().items:
                with contextlib.suppress(Exception):
                    core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                    )
            with contextlib.suppress(ServerError):
                wait_until(
                    lambda: not self._ctr("tasks", "ls", "-q", timeout=10).strip(),
                    what="containers to stop",
                    timeout=60,
                )

    def _kill_leftover_containers(self) -> None:
        """SIGKILL containers and shims that outlived containerd (their pids are in its state)."""
        state = self.workdir / "containerd" / "state" / "io.containerd.runtime.v2.task"
        for pidfile in [*state.glob("*/*/init.pid"), *state.glob("*/*/shim.pid")]:
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)

    def _unmount(self) -> None:
        """Unmount everything under the work dir (overlays, Secret tmpfs, Pod netns), deepest
        first."""
        prefix = str(self.workdir) + "/"
        mounts = []
        with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    mounts.append(point)
        for point in sorted(set(mounts), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def _remove_cgroup_root(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if not top.is_dir():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _healthz(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the component's self-signed serving cert, on 127.0.0.1
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as r:
        return bool(r.status == 200)


def wait_for_pod(api: ApiClient, namespace: str, name: str, *, timeout: float = 120) -> Any:
    """Wait until a Pod has finished (Succeeded or Failed) and return it (V1Pod)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    pod: Any = None

    def done() -> bool:
        nonlocal pod
        pod = core.read_namespaced_pod(name, namespace)
        return pod.status.phase in ("Succeeded", "Failed")

    wait_until(done, what=f"pod {namespace}/{name} to finish", timeout=timeout, interval=0.5)
    return pod


def main() -> None:
    """Run a node with the runner image until Ctrl-C (debugging: `python -m tests.infra.node`)."""
    import signal as _signal
    import sys

    from tests.infra.images import runner_image

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    _signal.signal(_signal.SIGINT, interrupt)
    _signal.signal(_signal.SIGTERM, interrupt)
    NETNS.enter()
    try:
        with Node() as node:
            image = runner_image()
            node.import_image(image)
            print(f"node {node.name} Ready; runner image {image.ref}")
            kubectl = f"ip netns exec {NETNS.name} .cache/bin/kubectl"
            kubectl += f" --kubeconfig {node.kubeconfig}"
            print(f"kubectl: {kubectl} get nodes")
            for name, log in node.logs.items():
                print(f"  {name} log: {log}")
            sys.stdout.flush()
            with contextlib.suppress(KeyboardInterrupt):
                _signal.pause()
            print("stopping", flush=True)
    finally:
        NETNS.leave()


if __name__ == "__main__":
    main()
