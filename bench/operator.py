"""Control plane: Backup created -> Job created latency, and operator RSS with many objects.

``run(work, n_latency=100, n_objects=1000)`` starts a real etcd + kube-apiserver +
kube-controller-manager (tests/infra/kube.py; no kubelet, the pods need not run), applies the
CRDs and runs ``safehold-operator`` as its own process, watching one namespace.

* Latency: Backups created one at a time (5 per second); a watch on Jobs timestamps each Job's
  arrival; latency = Job seen - Backup create call made. Beside it, the floor measured the
  same way: a ConfigMap create call -> seen by a watch (what the API server and a watch cost
  without any operator).
* RSS: the operator's VmRSS idle with no objects, then after it has handled ``n_objects``
  Backups (already Completed, as most are in real life: it has listed, parsed and annotated
  each), with the ratio.

Numbers are printed, never asserted (DESIGN.md section 8).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

GROUP, VERSION = "safehold.dev", "v1alpha1"
REPO = Path(__file__).resolve().parent.parent


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Arrivals:
    """A watch thread recording when each object first appears, by a key function; the watch
    is re-established whenever the server ends it."""

    def __init__(self, list_fn: Any, ns: str, key: Any) -> None:
        self.seen: dict[str, float] = {}
        self._list, self._ns, self._key = list_fn, ns, key
        self._stop = threading.Event()
        self._w: Any = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        time.sleep(1.0)  # the watch is established

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            self._w = watch.Watch()
            try:
                for ev in self._w.stream(self._list, self._ns, timeout_seconds=300):
                    k = self._key(ev["object"])
                    if k and k not in self.seen:
                        self.seen[k] = time.time()
            except Exception:  # ended by the server or by stop(): watch again unless stopping
                time.sleep(0.05)

    def wait(self, key: str, timeout: float = 30.0) -> float | None:
        deadline = time.time() + timeout
        while key not in self.seen and time.time() < deadline:
            time.sleep(0.002)
        return self.seen.get(key)

    def stop(self) -> None:
        self._stop.set()
        if self._w is not None:
            self._w.stop()


def _target(ns: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupTarget",
            "metadata": {"name": "bench", "namespace": ns},
            "spec": {"engine": "postgresql",
                     "connection": {"host": "db", "database": "bench", "username": "u",
                                    "passwordSecretRef": {"name": "db", "key": "password"}},
                     "storage": {"url": "s3://bench/repo"},
                     "encryption": {"none": True}}}


def _backup(ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Backup",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"targetRef": {"name": "bench"}}}


def run(work: Path, n_latency: int = 100, n_objects: int = 1000) -> None:
    import yaml
    from kubernetes import client
    from tests.infra.kube import ControlPlane

    print("\n== control plane: safehold-operator (real kube-apiserver, no kubelet) ==")
    with ControlPlane() as cp, cp.api_client() as api:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        custom = client.CustomObjectsApi(api)
        ext = client.ApiextensionsV1Api(api)
        for path in sorted((REPO / "crds").glob("*.yaml")):
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        time.sleep(2)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "SAFEHOLD_NAMESPACES": ns,
               "SAFEHOLD_RUNNER_IMAGE": "safehold/runner:bench"}
        log = (work / "operator.log").open("wb")
        exe = Path(sys.executable).parent / "safehold-operator"
        # BENCH_OPERATOR_LOG=--verbose puts kopf's debug log into operator.log
        flag = os.environ.get("BENCH_OPERATOR_LOG", "--quiet")
        proc = subprocess.Popen([str(exe), flag], env=env, stdout=log, stderr=log)
        try:
            time.sleep(8)  # started, watching
            idle = _rss_mb(proc.pid)
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "backuptargets",
                                                   _target(ns))
            # -- floor: a ConfigMap created -> seen by a watch
            cms = _Arrivals(core.list_namespaced_config_map, ns, lambda o: o.metadata.name)
            floor = []
            for i in range(n_latency):
                custom_name = f"floor-{i}"
                t0 = time.time()
                core.create_namespaced_config_map(ns, {"metadata": {"name": custom_name}})
                seen = cms.wait(custom_name)
                if seen is not None:
                    floor.append(max(0.0, seen - t0))
            cms.stop()
            # -- Backup created -> Job created
            jobs = _Arrivals(batch.list_namespaced_job, ns,
                             lambda o: (o.metadata.labels or {}).get("safehold.dev/owner-uid"))
            created: dict[str, float] = {}
            for i in range(n_latency):
                t0 = time.time()
                body = custom.create_namespaced_custom_object(
                    GROUP, VERSION, ns, "backups", _backup(ns, f"lat-{i:04d}"))
                created[body["metadata"]["uid"]] = t0
                time.sleep(0.2)
            deadline = time.time() + 120
            while len(set(created) & set(jobs.seen)) < len(created) and time.time() < deadline:
                time.sleep(0.1)
            jobs.stop()
            lat = [max(0.0, jobs.seen[u] - t) for u, t in created.items() if u in jobs.seen]
            if lat:
                p50, p95 = _pct(lat, 0.5), _pct(lat, 0.95)
                f50, f95 = _pct(floor, 0.5), _pct(floor, 0.95)
                print(f"Backup -> Job, {len(lat)}/{n_latency} Backups at 5/s: p50 {p50 * 1000:.0f}"
                      f" ms, p95 {p95 * 1000:.0f} ms (goal p95 <= 1 s)")
                print(f"  floor, ConfigMap -> watch: p50 {f50 * 1000:.0f} ms, p95 {f95 * 1000:.0f}"
                      f" ms; operator/floor p95 ratio {p95 / max(f95, 1e-3):.1f}x")
            else:
                print(f"Backup -> Job: no Job seen within 120 s (see {work / 'operator.log'})")
            # -- RSS with many objects
            t0 = time.time()
            for i in range(n_objects):
                name = f"done-{i:05d}"
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, "backups",
                                                       _backup(ns, name))
                custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, "backups", name,
                    {"status": {"phase": "Completed", "storedBytes": 1000 + i, "backupId":
                                f"20261201T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}"
                                ".000001Z"}})
            made = time.time() - t0
            key = "kopf.safehold.dev/last-handled-configuration"
            handled, deadline = 0, time.time() + 300
            while time.time() < deadline:
                items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "backups")["items"]
                handled = sum(1 for b in items if key in (b["metadata"].get("annotations") or {}))
                if handled >= n_objects + n_latency:
                    break
                time.sleep(2)
            time.sleep(5)
            full = _rss_mb(proc.pid)
            print(f"operator RSS: idle {idle:.0f} MB; with {handled} Backup objects handled"
                  f" {full:.0f} MB (goal <= 200 MB), {full / idle:.2f}x idle"
                  f" ({n_objects} objects created in {made:.0f} s)")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


if __name__ == "__main__":
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp"))
