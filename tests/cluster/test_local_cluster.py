"""``scripts/cluster`` (``make cluster``): ``up`` leaves a running node with the chart's operator
behind it, ``exec`` reaches it from inside its network namespace, ``down`` removes everything.

Runs under its own name (``SAFEHOLD_CLUSTER``) so a developer's own cluster is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import images
from tests.infra.netns import NODE_IP
from tests.infra.node import missing_binaries
from tests.infra.procs import CACHE, REPO, ServerError, unavailable

SCRIPT = REPO / "scripts" / "cluster"


def run(name: str, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAFEHOLD_CLUSTER": name}
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def using(state: Path) -> list[str]:
    """Live processes whose command line names ``state`` (containerd shims do)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"{state}/".encode() in cmdline and alive(int(proc.name)):
            found.append(cmdline.decode(errors="replace"))
    return found


@pytest.fixture
def name() -> Iterator[str]:
    name = f"safehold-cluster-t{os.getpid()}"
    yield name
    run(name, "down", timeout=300)  # whatever the test left


def test_exec_without_up_says_what_to_do() -> None:
    res = run("safehold-cluster-never-up", "exec", "--", "true", timeout=60)
    assert res.returncode == 1, res
    assert "is not up: run `scripts/cluster up` first" in res.stderr


def test_up_exec_down(name: str) -> None:
    missing = missing_binaries() + ([] if (CACHE / "bin" / "helm").exists() else ["helm"])
    if missing or os.geteuid() != 0:
        unavailable("local cluster", f"missing {missing} or not root")
    try:  # built here (in the machine's namespace when the session is in the test one)
        images.runner_image()
        images.operator_image()
    except ServerError as exc:
        unavailable("images", str(exc))
    state = CACHE / "cluster" / name

    res = run(name, "up")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "scripts/cluster exec -- kubectl get pods -A" in res.stdout
    # the supervisor outlived `up`; the node's processes are recorded
    supervisor = int((state / "supervisor.pid").read_text())
    pids = [supervisor, *json.loads((state / "pids.json").read_text()).values()]
    assert all(alive(p) for p in pids), pids

    pods = run(name, "exec", "--", "kubectl", "get", "pods", "-A", "--no-headers", timeout=120)
    assert pods.returncode == 0, pods.stderr
    operator = [ln.split() for ln in pods.stdout.splitlines()
                if ln.startswith("safehold-system ") and " safehold-" in ln]
    assert operator and operator[0][3] == "Running", pods.stdout

    env = run(name, "exec", "--", "sh", "-c", 'echo "$SAFEHOLD_HOST_IP"; ip -o -4 addr show',
              timeout=60)
    host_ip, *addrs = env.stdout.splitlines()
    assert host_ip == NODE_IP
    assert any(f"inet {NODE_IP}/" in a for a in addrs), env.stdout  # inside the namespace

    failed = run(name, "exec", "--", "sh", "-c", "exit 7", timeout=60)
    assert failed.returncode == 7, failed  # the command's own exit code

    again = run(name, "up", timeout=120)
    assert again.returncode == 1 and "already up" in again.stderr, again

    status = run(name, "status", timeout=120)
    assert status.returncode == 0 and "is up" in status.stdout, status

    down = run(name, "down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (Path("/run/netns") / name).exists()
    assert not state.exists()
    assert not [p for p in pids if alive(p)], "processes outlived `down`"
    assert not using(state), "processes (containerd shims?) outlived `down`"
    assert str(state) not in Path("/proc/self/mountinfo").read_text()
    gone = run(name, "status", timeout=60)
    assert gone.returncode == 1 and "is down" in gone.stdout


def test_up_refuses_leftovers_and_down_removes_them(name: str) -> None:
    """A cluster killed hard leaves its namespace and state: `up` names them and the fix,
    `down` removes them."""
    if os.geteuid() != 0 or missing_binaries():
        unavailable("local cluster", "not root, or `make infra` not run")
    state = CACHE / "cluster" / name
    state.mkdir(parents=True)
    (state / "supervisor.pid").write_text("999999999\n")  # no such process
    subprocess.run(["ip", "netns", "add", name], check=True)

    res = run(name, "up", timeout=120)
    assert res.returncode == 1, res
    assert "leftovers of an earlier" in res.stderr and "scripts/cluster down" in res.stderr
    assert "building" not in res.stdout  # refused before doing anything

    down = run(name, "down", timeout=120)
    assert down.returncode == 0, down
    assert not (Path("/run/netns") / name).exists() and not state.exists()


def test_down_after_the_supervisor_was_killed(name: str) -> None:
    """SIGKILL leaves the node's processes, containers, mounts and cgroups: `down` removes them."""
    missing = missing_binaries() + ([] if (CACHE / "bin" / "helm").exists() else ["helm"])
    if missing or os.geteuid() != 0:
        unavailable("local cluster", f"missing {missing} or not root")
    state = CACHE / "cluster" / name
    res = run(name, "up")
    assert res.returncode == 0, res.stdout + res.stderr
    supervisor = int((state / "supervisor.pid").read_text())
    pids = list(json.loads((state / "pids.json").read_text()).values())
    cgroup = (state / "cgroup-root").read_text().strip().lstrip("/")
    os.kill(supervisor, signal.SIGKILL)
    assert all(alive(p) for p in pids), "the node went down with its supervisor"

    down = run(name, "down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [p for p in pids if alive(p)], "processes outlived `down`"
    assert not using(state), "processes (containerd shims?) outlived `down`"
    assert not (Path("/run/netns") / name).exists() and not state.exists()
    assert str(state) not in Path("/proc/self/mountinfo").read_text()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{cgroup}")), "cgroups left"
