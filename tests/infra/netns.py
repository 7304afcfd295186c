"""The test network namespace: the pytest process moves into one it creates, so every packet of
the cluster tests stays inside it.

The real node (``tests/infra/node.py``) puts Pods on a bridge; Pods cannot reach the machine's
127.0.0.1, and the workplace allows traffic only to loopback or to addresses inside network
namespaces the test run created itself. So when a session collects a test that uses the
``cluster`` fixture, ``fixtures_cluster.py`` calls :meth:`TestNetns.enter` once, before any
fixture runs: the pytest process (its main thread, and so every process it starts afterwards)
moves into a new namespace ``safehold-<pid>`` with ``lo`` up and a veth interface carrying
:data:`NODE_IP`. Every server of the session (the cluster, and PostgreSQL, MariaDB, moto, ...
started by their usual fixtures) then runs in there on its own 127.0.0.1 and free ports, and
:meth:`TestNetns.expose_loopback` lets Pods reach any of them at ``NODE_IP:<port>``.

Only what needs the outside (``buildah bud`` running pip/apt) goes back to the machine's own
namespace, through :func:`host_net`. The namespace is deleted (with every interface, route and
iptables rule in it) by :meth:`TestNetns.leave` at the end of the session.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

NODE_IP = "10.244.76.1"  # the node's InternalIP, on a veth interface inside the namespace
NODE_IF = "shnode0"
POD_CIDR = "10.244.77.0/24"  # the CNI bridge's range (tests/infra/node.py)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _drop_stale() -> None:
    """Delete namespaces left by killed test runs (``safehold-<pid>`` whose pid is gone)."""
    for path in Path("/run/netns").glob("safehold-*"):
        pid = path.name.removeprefix("safehold-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", path.name], capture_output=True, check=False)


class TestNetns:
    """A network namespace that the calling thread (pytest's main thread) enters and leaves."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"safehold-{os.getpid()}"
        self.path = Path("/run/netns") / self.name
        self._host_fd: int | None = None  # the namespace we came from, for host_net()

    @property
    def active(self) -> bool:
        return self._host_fd is not None

    def enter(self) -> None:
        """Create the namespace, move this thread into it, set up lo and the node's address.

        Needs root (``ip netns add``). Raises OSError naming the failing step.
        """
        if self.active:
            return
        if os.geteuid() != 0:
            raise OSError("the test network namespace needs root (ip netns add)")
        _drop_stale()
        _run("ip", "netns", "add", self.name)
        try:
            host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            ns_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(ns_fd)
            finally:
                os.close(ns_fd)
            self._host_fd = host_fd
            _run("ip", "link", "set", "lo", "up")
            # a veth pair with both ends in here (the kernel may lack the dummy module): one end
            # carries the node's address, the other only gives it a carrier
            _run("ip", "link", "add", NODE_IF, "type", "veth", "peer", "name", f"{NODE_IF}p")
            _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", NODE_IF)
            _run("ip", "link", "set", f"{NODE_IF}p", "up")
            _run("ip", "link", "set", NODE_IF, "up")
            # ClusterIPs are routed by kube-proxy's iptables rules; the kernel needs some route
            # for them first when the test process itself connects to one
            _run("ip", "route", "add", "10.0.0.0/24", "dev", NODE_IF)
            for key, value in {"net.ipv4.ip_forward": "1"}.items():
                Path("/proc/sys", *key.split(".")).write_text(value)
        except BaseException:
            self.leave()
            raise

    def expose_loopback(self, bridge: str) -> None:
        """Let Pods on ``bridge`` reach every server on this namespace's 127.0.0.1 by NODE_IP.

        A DNAT rule rewrites Pod traffic for NODE_IP:<port> to 127.0.0.1:<port> (route_localnet
        allows loopback addresses on the bridge), so servers started by the ordinary fixtures
        on 127.0.0.1 need no change to be reachable from a Pod.
        """
        for iface in ("all", bridge):
            Path(f"/proc/sys/net/ipv4/conf/{iface}/route_localnet").write_text("1")
        _run(
            "iptables", "-t", "nat", "-A", "PREROUTING", "-i", bridge, "-d", NODE_IP,
            "-p", "tcp", "-j", "DNAT", "--to-destination", "127.0.0.1",
        )  # fmt: skip

    def leave(self) -> None:
        """Return to the original namespace and delete this one (idempotent)."""
        if self._host_fd is not None:
            _setns(self._host_fd)
            os.close(self._host_fd)
            self._host_fd = None
        if self.path.exists():
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def host_net(self, argv: list[str]) -> list[str]:
        """argv to run in the machine's own namespace (network access for image builds)."""
        if self._host_fd is None:
            return list(argv)
        return ["nsenter", f"--net=/proc/{os.getpid()}/fd/{self._host_fd}", "--", *argv]


NETNS = TestNetns()
