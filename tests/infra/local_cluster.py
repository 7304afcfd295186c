"""``scripts/cluster``: the real single-node cluster of the tests, for anyone to start and use.

``up`` builds the runner and operator images (cached, see ``tests/infra/images.py``), then forks
a supervisor process into the background: it creates the network namespace ``safehold-cluster``
(``tests/infra/netns.py``), starts the node there (``tests/infra/node.py``: control plane,
kubelet, containerd), imports both images, installs ``charts/safehold`` with helm into
``safehold-system``, writes ``kubeconfig`` and stays alive until ``down`` sends it SIGTERM;
then it stops the node and deletes the namespace (with every interface and iptables rule in it).
``up`` returns when the operator is Ready. State (PIDs, logs, node directories) lives in
``.cache/cluster/<name>/``.

``exec -- CMD`` runs CMD inside the namespace with ``KUBECONFIG`` set, ``.cache/bin`` (kubectl,
helm) on PATH and ``SAFEHOLD_HOST_IP`` = the node IP: a server CMD starts on 127.0.0.1:<port> is
reachable from Pods at ``$SAFEHOLD_HOST_IP:<port>``. ``SAFEHOLD_CLUSTER`` picks another name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import click

from tests.infra.netns import NODE_IP, TestNetns
from tests.infra.procs import CACHE, REPO

NAME = os.environ.get("SAFEHOLD_CLUSTER", "safehold-cluster")
STATE = CACHE / "cluster" / NAME
NETNS_PATH = Path("/run/netns") / NAME
RELEASE = "safehold"
NAMESPACE = "safehold-system"
HELM = CACHE / "bin" / "helm"
UP_TIMEOUT = 600.0


class ClusterError(click.ClickException):
    """A failure that says what to do; exit code 1."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own un-reaped child) counts as gone
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _supervisor_pid() -> int | None:
    pidfile = STATE / "supervisor.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if _alive(pid):
            return pid
    return None


def _using_state() -> list[int]:
    """Processes whose command line names this cluster's state directory."""
    marker = f"{STATE}/".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


def _preflight() -> None:
    from tests.infra.node import missing_binaries

    if os.geteuid() != 0:
        raise ClusterError("the cluster needs root (network namespace, mounts, cgroups)")
    missing = missing_binaries()
    if not HELM.exists():
        missing.append(f"helm ({HELM})")
    if missing:
        raise ClusterError("missing: " + "; ".join(missing) + "\nrun `make infra` first")
    if _supervisor_pid() is not None:
        raise ClusterError(f"{NAME} is already up (`scripts/cluster status`; "
                           "`scripts/cluster down` to stop it)")
    if NETNS_PATH.exists() or STATE.exists():
        raise ClusterError(f"leftovers of an earlier {NAME} ({NETNS_PATH} or {STATE}): "
                           "run `scripts/cluster down` first")


def helm_install(kubeconfig: Path, runner_ref: str, operator_ref: str, *, home: Path,
                 release: str = RELEASE, namespace: str = NAMESPACE,
                 extra: tuple[str, ...] = ()) -> str:
    """``helm install`` of charts/safehold with the two images (pullPolicy Never, as they are
    imported into the node); helm's cache and config under ``home``; ``extra`` helm arguments
    (e.g. ``--set watchNamespaces={ns}``). Returns helm's output; RuntimeError with it on failure.
    Also used by the whole-system tests (e2e/local.py)."""
    def image(prefix: str, ref: str) -> list[str]:
        repo, tag = ref.rsplit(":", 1)
        return ["--set", f"{prefix}.repository={repo}", "--set", f"{prefix}.tag={tag}",
                "--set", f"{prefix}.pullPolicy=Never"]

    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           "HELM_CACHE_HOME": str(home / "helm-cache"),
           "HELM_CONFIG_HOME": str(home / "helm-config")}
    argv = [str(HELM), "install", release, str(REPO / "charts" / "safehold"),
            "--namespace", namespace, "--create-namespace", *image("image", operator_ref),
            *image("runner.image", runner_ref), *extra, "--wait", "--timeout", "300s"]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=330)
    if res.returncode != 0:
        raise RuntimeError(f"helm install failed: {res.stdout}{res.stderr}")
    return res.stdout


def _helm_install(node_kubeconfig: Path, runner_ref: str, operator_ref: str) -> None:
    helm_install(node_kubeconfig, runner_ref, operator_ref, home=STATE)


def _supervise(runner_archive: str, runner_ref: str, operator_archive: str,
               operator_ref: str) -> None:
    """The background process: node up, chart installed, then wait for SIGTERM and tear down."""
    from tests.infra.images import Image
    from tests.infra.node import Node

    stopping = False

    def terminate(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    netns = TestNetns(NAME)
    node = Node(STATE / "node", netns=netns)
    try:
        netns.enter()
        node.start()
        pids = {name: s.proc.pid for name, s in node._servers.items()}
        (STATE / "pids.json").write_text(json.dumps(pids | node.control_plane.pids))
        (STATE / "cgroup-root").write_text(node.cgroup_root)
        node.import_image(Image(runner_ref, Path(runner_archive)))
        node.import_image(Image(operator_ref, Path(operator_archive)))
        shutil.copy(node.kubeconfig, STATE / "kubeconfig")
        _helm_install(STATE / "kubeconfig", runner_ref, operator_ref)
        (STATE / "ready").write_text(json.dumps({"logs": {k: str(v) for k, v in
                                                          node.logs.items()}}))
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    except BaseException:
        traceback.print_exc()
        (STATE / "failed").write_text(traceback.format_exc(limit=3))
    finally:
        node.stop()
        netns.leave()
        (STATE / "stopped").write_text("")
        sys.stdout.flush()
        os._exit(0 if stopping else 1)


@click.group(help="The local single-node cluster with the Safehold chart installed.")
def cli() -> None:
    pass


@cli.command()
def up() -> None:
    """Start the cluster in the background and install the chart (returns when Ready)."""
    from tests.infra.images import operator_image, runner_image

    _preflight()
    click.echo("building/reusing the runner and operator images (first time: minutes)...")
    runner, operator = runner_image(), operator_image()
    STATE.mkdir(parents=True)
    log = STATE / "supervisor.log"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the supervisor: its own session, output to the log, no terminal
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        _supervise(str(runner.archive), runner.ref, str(operator.archive), operator.ref)
    (STATE / "supervisor.pid").write_text(f"{pid}\n")
    click.echo(f"starting {NAME} (supervisor pid {pid}, log {log})...")
    deadline = time.monotonic() + UP_TIMEOUT
    while not (STATE / "ready").exists():
        if (STATE / "failed").exists() or not _alive(pid) or time.monotonic() > deadline:
            why = (STATE / "failed").read_text() if (STATE / "failed").exists() else "timed out"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            _down(quiet=True)  # nothing is left half-made
            raise ClusterError(f"{NAME} did not come up: {why}\n--- the end of its log:\n"
                               f"{tail}\n(everything was removed; fix the cause and rerun "
                               "`scripts/cluster up`)")
        time.sleep(1)
    os.waitpid(pid, os.WNOHANG)
    click.echo(f"""{NAME} is up: node {NODE_IP}, operator release {RELEASE!r} in {NAMESPACE}.
  scripts/cluster exec -- kubectl get pods -A
  scripts/cluster exec -- bash        # a shell with KUBECONFIG, kubectl, helm, SAFEHOLD_HOST_IP
  scripts/cluster status
  scripts/cluster down                # stops everything and removes {STATE}""")


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(argv: tuple[str, ...]) -> None:
    """Run ARGV inside the cluster's network namespace (use `exec -- CMD ARGS...`)."""
    if _supervisor_pid() is None or not (STATE / "ready").exists():
        raise ClusterError(f"{NAME} is not up: run `scripts/cluster up` first")
    env = {**os.environ, "KUBECONFIG": str(STATE / "kubeconfig"), "SAFEHOLD_HOST_IP": NODE_IP,
           "PATH": f"{CACHE / 'bin'}:{os.environ.get('PATH', '')}"}
    nsenter = ["nsenter", f"--net={NETNS_PATH}", "--", *argv]
    os.execvpe(nsenter[0], nsenter, env)


def _down(*, quiet: bool = False) -> None:
    pid = _supervisor_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 180
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.5)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    # a supervisor that was killed leaves processes, mounts and the namespace: clean up by hand
    pids = STATE / "pids.json"
    if pids.exists():
        from tests.infra.procs import stop_pid

        for p in json.loads(pids.read_text()).values():
            if isinstance(p, int) and _alive(p):
                stop_pid(p, timeout=10)
    tasks = STATE / "node" / "containerd" / "state" / "io.containerd.runtime.v2.task"
    for pidfile in [*tasks.glob("*/*/init.pid"), *tasks.glob("*/*/shim.pid")]:
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)  # containers, shims
    for pid in _using_state():  # shims whose pid file is gone: they name the state dir
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if (STATE / "cgroup-root").exists():
        from tests.infra.node import _cgroup_hierarchies

        root = (STATE / "cgroup-root").read_text().strip().lstrip("/")
        for top in (h / root for h in _cgroup_hierarchies() if root):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()
    if STATE.exists():
        with open("/proc/self/mountinfo") as f:
            points = [ln.split()[4] for ln in f if ln.split()[4].startswith(f"{STATE}/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if NETNS_PATH.exists():
        subprocess.run(["ip", "netns", "del", NAME], capture_output=True, check=False)
    shutil.rmtree(STATE, ignore_errors=True)
    if not quiet:
        click.echo(f"{NAME} is down (namespace, processes and {STATE} removed)")


@cli.command()
def down() -> None:
    """Stop the cluster and remove everything `up` made (namespace, processes, state)."""
    if os.geteuid() != 0:
        raise ClusterError("`down` needs root, as `up` did")
    _down()


@cli.command()
def status() -> None:
    """Say whether the cluster is up, and show its node and Pods."""
    pid = _supervisor_pid()
    if pid is None:
        left = [str(p) for p in (NETNS_PATH, STATE) if p.exists()]
        extra = f" (leftovers: {', '.join(left)}: `scripts/cluster down`)" if left else ""
        click.echo(f"{NAME} is down{extra}")
        raise SystemExit(1)
    if not (STATE / "ready").exists():
        click.echo(f"{NAME} is starting (supervisor pid {pid}, log {STATE / 'supervisor.log'})")
        return
    click.echo(f"{NAME} is up (supervisor pid {pid}, node {NODE_IP}, state {STATE})")
    subprocess.run(["nsenter", f"--net={NETNS_PATH}", "--", str(CACHE / "bin" / "kubectl"),
                    "--kubeconfig", str(STATE / "kubeconfig"), "get", "nodes,pods", "-A"],
                   check=False)


if __name__ == "__main__":
    cli(prog_name="scripts/cluster")
