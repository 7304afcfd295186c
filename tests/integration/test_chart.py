"""The Helm chart, offline: `helm lint --strict`, `helm template` for several value sets validated
against the Kubernetes OpenAPI schemas (kubernetes-validate), the values schema rejecting bad
values by name, the operator's settings wired from values, and least-privilege RBAC checked
against every API call controller/kube.py makes (the install on a real cluster, under the
restricted Pod Security Standard, is tests/cluster/test_chart.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.controller.settings import _ENV, PREFIX, Settings
from tests.infra.helm import CHART, helm, render
from tests.infra.kube import KUBE_VERSION
from tests.infra.procs import REPO

KUBE = KUBE_VERSION.lstrip("v")
KINDS = ("backuptargets", "backupschedules", "backups", "restores")

VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}", "--set", "logLevel=DEBUG"],
    "no-rbac-no-metrics-no-crds": [
        "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
        "--set", "serviceAccount.name=ops", "--set", "metrics.enabled=false",
        "--set", "crds.install=false"],
    "overrides": [
        "--set", "image.tag=dev", "--set", "runner.image.repository=reg.example/runner",
        "--set", "runner.image.tag=1.2.3", "--set", "runner.image.pullPolicy=Always",
        "--set", "fullnameOverride=backups", "--set", "nodeSelector.disk=ssd",
        "--set", "podAnnotations.a=b", "--set", "imagePullSecrets[0].name=regcred",
        "--set", "jobs.activeDeadlineSeconds=1000000", "--set", "logFormat=json",
        "--set", "crds.keep=false", "--set", "runner.serviceAccountName=dumper"],
    "monitoring": [
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.prometheusRule.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=prom",
        "--set", "metrics.serviceMonitor.interval=1m",
        "--set", "metrics.serviceMonitor.scrapeTimeout=10s"],
}
# The Prometheus Operator's kinds: kubernetes-validate has no schema for them (no CRD here);
# test_service_monitor_scrapes_the_metrics_service checks the ServiceMonitor's wiring instead.
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = by_kind(docs, "Deployment")
    return deploy


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_helm_lint_strict() -> None:
    for args in ([], ["--set", "watchNamespaces={team-a}"], VARIANTS["monitoring"]):
        res = helm("lint", "--strict", str(CHART), *args)
        assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_template_is_valid_kubernetes(variant: str) -> None:
    import kubernetes_validate

    docs = render(*VARIANTS[variant], kube_version=KUBE)
    assert deployment(docs)
    for doc in docs:
        if doc["apiVersion"] == PROMETHEUS_OPERATOR:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']} is invalid for "
                        f"Kubernetes {KUBE}: {exc}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_operator_settings_come_from_values(variant: str) -> None:
    env = env_of(render(*VARIANTS[variant]))
    wanted = {PREFIX + var for var in _ENV.values()}
    missing = wanted - set(env)
    assert not missing, f"the chart does not set {sorted(missing)} (controller/settings.py)"
    unknown = {k for k in env if k not in wanted}
    assert not unknown, f"the chart sets {sorted(unknown)}, which the operator never reads"
    settings = Settings.from_env(env)  # the rendered values are valid settings
    if variant == "namespaced":
        assert settings.namespaces == ("team-a", "team-b")
    else:
        assert settings.clusterwide
    if variant == "overrides":
        assert settings.runner_image == "reg.example/runner:1.2.3"
        assert settings.image_pull_policy == "Always"
        assert settings.job_deadline_seconds == 1_000_000
        assert settings.runner_service_account == "dumper"
    else:
        assert settings.runner_image.endswith(":" + chart_meta()["appVersion"])


def chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


def test_deployment_shape() -> None:
    deploy = deployment(render())
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["health"] == 8081
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # the restricted Pod Security Standard
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_log_level_maps_to_kopf_flags() -> None:
    def args(level: str) -> list[str]:
        deploy = deployment(render("--set", f"logLevel={level}"))
        return list(deploy["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--debug" in args("DEBUG")
    assert "--quiet" in args("WARNING") and "--quiet" in args("ERROR")
    assert not {"--debug", "--quiet", "--verbose"} & set(args("INFO"))


# --------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("fullname", [None, "backups"])
def test_service_monitor_scrapes_the_metrics_service(fullname: str | None) -> None:
    extra = ["--set", f"fullnameOverride={fullname}"] if fullname else []
    docs = render(*VARIANTS["monitoring"], *extra, namespace="observed")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (service,) = by_kind(docs, "Service")
    assert monitor["apiVersion"] == PROMETHEUS_OPERATOR
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "observed"
    assert monitor["metadata"]["labels"]["release"] == "prom"  # what Prometheus selects it by
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["observed"]}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "selects no Service"
    # ... and no other Service of the chart
    others = [d for d in docs if d["kind"] == "Service" and d is not service]
    assert not [o for o in others if selector.items() <= o["metadata"]["labels"].items()]
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "1m",
                        "scrapeTimeout": "10s"}
    # the Service's port is the one the operator serves /metrics on
    assert env_of(docs)["SAFEHOLD_METRICS_PORT"] == str(service["spec"]["ports"][0]["port"])


def test_service_monitor_is_off_by_default() -> None:
    assert not by_kind(render(), "ServiceMonitor")
    (monitor,) = by_kind(render("--set", "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics",
                                             "interval": "30s"}]


# ------------------------------------------------------------------------------------ CRDs


def test_crds_are_templates_kept_on_uninstall() -> None:
    crds = by_kind(render(), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == sorted(f"{k}.safehold.dev" for k in KINDS)
    for crd in crds:
        name = crd["metadata"]["name"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}, name
        assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "safehold"
        source = next(yaml.safe_load(p.read_text()) for p in (REPO / "crds").glob("*.yaml")
                      if yaml.safe_load(p.read_text())["metadata"]["name"] == name)
        assert crd["spec"] == source["spec"], f"{name}: the chart renders another schema"
    # never in the chart's crds/ folder, which Helm installs once and never upgrades
    assert not (CHART / "crds").exists()
    assert not by_kind(render("--set", "crds.install=false"), "CustomResourceDefinition")
    unkept = by_kind(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert unkept and all("annotations" not in c["metadata"] for c in unkept)


# ------------------------------------------------------------------------------------ RBAC

# every API call controller/kube.py makes -> the (apiGroup, resource, verb) it needs
CALLS = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "read_namespaced_job": ("batch", "jobs", "get"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "create_namespaced_service_account": ("", "serviceaccounts", "create"),
    "read_namespaced_service_account": ("", "serviceaccounts", "get"),
    "create_namespaced_secret": ("", "secrets", "create"),
    "read_namespaced_secret": ("", "secrets", "get"),
    "create_namespaced_persistent_volume_claim": ("", "persistentvolumeclaims", "create"),
    "read_namespaced_persistent_volume_claim": ("", "persistentvolumeclaims", "get"),
    # secret_version: a raw GET of a Secret as PartialObjectMetadata (self.api)
    "param_serialize": ("", "secrets", "get"),
    "call_api": ("", "secrets", "get"),
    "patch_namespaced_custom_object": ("safehold.dev", "*", "patch"),
    "delete_namespaced_custom_object": ("safehold.dev", "backups", "delete"),
    "list_namespaced_pod": ("", "pods", "list"),
    # the pointInTime streamer Deployments (a changed one is deleted, then created again)
    "create_namespaced_deployment": ("apps", "deployments", "create"),
    "read_namespaced_deployment": ("apps", "deployments", "get"),
    "delete_namespaced_deployment": ("apps", "deployments", "delete"),
    "read_namespace": ("", "namespaces", "get"),
    "create_namespaced_event": ("", "events", "create"),
    "create_namespaced_custom_object": ("safehold.dev", "backups", "create"),
    "get_namespaced_custom_object": ("safehold.dev", "*", "get"),
    "list_namespaced_custom_object": ("safehold.dev", "*", "list"),
    "patch_namespaced_custom_object_status": ("safehold.dev", "*/status", "patch"),
}
# what kopf itself does: watch what it handles, patch its annotations and finalizers, post
# events, discover the CRDs and (with watchNamespaces) the namespaces
KOPF = [
    *(("safehold.dev", k, v) for k in KINDS for v in ("list", "watch", "patch")),
    ("batch", "jobs", "list"), ("batch", "jobs", "watch"), ("", "events", "create"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"), ("", "namespaces", "watch"),
]
# Jobs are owned with blockOwnerDeletion (builders/job.py): with the admission plugin
# OwnerReferencesPermissionEnforcement (OpenShift) that needs update on the owner's finalizers
IMPLIED = [("safehold.dev", f"{k}/finalizers", "update")
           for k in ("backuptargets", "backups", "restores")]
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions"}


def kube_calls() -> set[str]:
    """Names of the client methods kube.py calls on self.core / .batch / .apps / .custom /
    .api."""
    tree = ast.parse((REPO / "operator/safehold/controller/kube.py").read_text())
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr in ("core", "batch", "apps", "custom", "api")}


def needed() -> set[tuple[str, str, str]]:
    unknown = kube_calls() - set(CALLS)
    assert not unknown, (f"controller/kube.py calls {sorted(unknown)}: grant it in the chart "
                         "(templates/_helpers.tpl safehold.operatorRules) and list it in CALLS")
    out: set[tuple[str, str, str]] = set(KOPF) | set(IMPLIED)
    for call in kube_calls():
        group, resource, verb = CALLS[call]
        if resource in ("*", "*/status"):
            out |= {(group, resource.replace("*", k), verb) for k in KINDS}
        else:
            out.add((group, resource, verb))
    return out


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def rbac(docs: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    """Scope ('' cluster-wide, else the namespace) -> what the operator may do there."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "safehold",
                                        "namespace": "safehold"}]
        ns = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"])]
        out.setdefault(ns, set()).update(grants(role["rules"]))
    return out


def test_rbac_cluster_wide_is_exactly_what_the_operator_calls() -> None:
    scopes = rbac(render())
    assert set(scopes) == {""}
    want = needed()
    assert want - scopes[""] == set(), "the operator would be refused these"
    extra = scopes[""] - want
    assert not extra, f"granted but never used (least privilege): {sorted(extra)}"
    # in particular: Secrets are never listed or watched, nothing by wildcard
    assert not {v for g, r, v in scopes[""] if r == "secrets"} - {"create", "get"}
    assert not any("*" in (g + r + v) or v == "deletecollection" for g, r, v in scopes[""])
    assert {r for _, r, v in scopes[""] if v == "update"} == {r for _, r, _ in IMPLIED}


def test_rbac_namespaced_grants_nothing_outside_the_watched_namespaces() -> None:
    docs = render("--set", "watchNamespaces={team-a,team-b}")
    scopes = rbac(docs)
    assert set(scopes) == {"", "team-a", "team-b"}
    assert {r for _, r, _ in scopes[""]} == CLUSTER_SCOPED  # read-only discovery
    assert {v for _, _, v in scopes[""]} <= {"get", "list", "watch"}
    want = needed()
    for ns in ("team-a", "team-b"):
        namespaced = {w for w in want if w[1] not in CLUSTER_SCOPED}
        assert namespaced - scopes[ns] == set(), ns
        assert scopes[ns] - namespaced == set(), ns
    assert not by_kind(docs, "ClusterRoleBinding")[1:], "one cluster-wide binding: discovery"


def test_runner_service_accounts_have_no_rights_and_no_token() -> None:
    docs = render("--set", "watchNamespaces={team-a,team-b}")
    runners = [d for d in by_kind(docs, "ServiceAccount")
               if d["metadata"]["name"] == "safehold-runner"]
    assert sorted(d["metadata"]["namespace"] for d in runners) == ["team-a", "team-b"]
    assert all(d["automountServiceAccountToken"] is False for d in runners)
    bound = [s for d in docs if d["kind"].endswith("Binding") for s in d["subjects"]]
    assert all(s["name"] != "safehold-runner" for s in bound)
    assert env_of(docs)["SAFEHOLD_RUNNER_SERVICE_ACCOUNT"] == "safehold-runner"
    # cluster-wide, the operator creates it per namespace (builders/serviceaccount.py)
    assert not [d for d in by_kind(render(), "ServiceAccount")
                if d["metadata"]["name"] == "safehold-runner"]


# ------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(("args", "named"), [
    (["--set", "rbac.create=maybe"], "rbac.create"),
    (["--set", "watchNamespaces={Team_A}"], "watchNamespaces"),
    (["--set", "logLevel=TRACE"], "logLevel"),
    (["--set", "jobs.backoffLimit=-1"], "jobs.backoffLimit"),
    (["--set", "runner.image.pullPolicy=Sometimes"], "runner.image.pullPolicy"),
    (["--set", "metrics.port=70000"], "metrics.port"),
    (["--set", "watchNamespace=shop"], "watchNamespace"),  # a typo is an unknown key
    (["--set", "metrics.port=8081"], "metrics.port and health.port must differ"),
    (["--set-string", "metrics.serviceMonitor.interval=30"], "metrics.serviceMonitor.interval"),
    (["--set", "metrics.serviceMonitor.scrapeTimeout=soon"],
     "metrics.serviceMonitor.scrapeTimeout"),
    (["--set", "metrics.serviceMonitor.enable=true"], "metrics.serviceMonitor"),  # a typo
    (["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.enabled=false"],
     "metrics.serviceMonitor.enabled needs metrics.enabled=true"),
])
def test_bad_values_are_rejected_by_name(args: list[str], named: str) -> None:
    res = helm("template", "safehold", str(CHART), *args)
    assert res.returncode != 0, f"{args} was accepted"
    assert named in res.stderr, res.stderr


def test_values_schema_covers_every_value() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], sch: dict[str, Any], path: str) -> None:
        props = sch.get("properties")
        if "$ref" in sch:
            return
        assert props is not None or sch.get("type") in ("object",), path
        for key, value in node.items():
            assert props is not None and key in props, f"{path}{key} has no schema"
            if isinstance(value, dict) and value and "properties" in props[key]:
                walk(value, props[key], f"{path}{key}.")

    walk(values, schema, "")
    assert schema["additionalProperties"] is False


def test_chart_has_no_crds_folder_and_packages(tmp_path: Path) -> None:
    res = helm("package", str(CHART), "--destination", str(tmp_path))
    assert res.returncode == 0, res.stderr
    (pkg,) = tmp_path.glob("safehold-*.tgz")
    import tarfile

    with tarfile.open(pkg) as tar:
        names = tar.getnames()
    assert sum(n.startswith("safehold/files/crds/") for n in names) == len(KINDS)
