"""The only module that talks to the Kubernetes API server.

Everything goes in and comes out as plain dicts (the shape ``kubectl get -o json`` shows), so
the builders and the logic never see client classes. Creation is always create-if-absent by
name: a 409 returns the object that is already there, which is what makes a restarted operator
converge instead of duplicating Jobs.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from safehold.controller.naming import GROUP

log = logging.getLogger(__name__)

VERSION = "v1alpha1"
Obj = dict[str, Any]


class Forbidden(Exception):
    """The API server refused to create something (e.g. the namespace is terminating)."""


class Conflict(Exception):
    """A conditional write lost: the object changed since the resourceVersion it was based on."""


def _json(resp: Any) -> Obj:
    data: Obj = json.loads(resp.data)
    return data


class Kube:
    """A thin facade over the typed clients; one instance per operator (thread-safe)."""

    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # ------------------------------------------------------------------ create-if-absent

    def _create(self, create: Any, read: Any, ns: str, body: Obj) -> tuple[Obj, bool]:
        name = body["metadata"]["name"]
        try:
            return _json(create(ns, body, _preload_content=False)), True
        except ApiException as exc:
            if exc.status == 409:
                return _json(read(name, ns, _preload_content=False)), False
            if exc.status in (403, 422) and exc.body:
                raise Forbidden(_reason(exc)) from None
            raise

    def ensure_claim(self, body: Obj) -> tuple[Obj, bool]:
        """Create the PersistentVolumeClaim unless one of that name exists; (claim, created)."""
        ns = body["metadata"]["namespace"]
        return self._create(self.core.create_namespaced_persistent_volume_claim,
                            self.core.read_namespaced_persistent_volume_claim, ns, body)

    def ensure_job(self, body: Obj) -> tuple[Obj, bool]:
        """Create the Job unless one of that name exists; returns (job, created)."""
        ns = body["metadata"]["namespace"]
        return self._create(
            self.batch.create_namespaced_job, self.batch.read_namespaced_job, ns, body
        )

    def ensure_deployment(self, body: Obj) -> tuple[Obj, bool]:
        """Create the Deployment unless one of that name exists; returns (it, created)."""
        ns = body["metadata"]["namespace"]
        return self._create(self.apps.create_namespaced_deployment,
                            self.apps.read_namespaced_deployment, ns, body)

    def ensure_service_account(self, body: Obj) -> tuple[Obj, bool]:
        ns = body["metadata"]["namespace"]
        return self._create(
            self.core.create_namespaced_service_account,
            self.core.read_namespaced_service_account,
            ns,
            body,
        )

    def ensure_secret(self, body: Obj) -> bool:
        """Create a Secret unless it exists (never overwritten); True when created.

        Returns only whether it was created: Secret data never travels further than this call.
        """
        ns = body["metadata"]["namespace"]
        try:
            self.core.create_namespaced_secret(ns, _any(body), _preload_content=False)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def ensure_custom(self, plural: str, body: Obj) -> tuple[Obj, bool]:
        ns = body["metadata"]["namespace"]

        def create(n: str, b: Obj, **kw: Any) -> Any:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, n, plural, b, **kw)

        def read(name: str, n: str, **kw: Any) -> Any:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, n, plural, name, **kw)

        return self._create(create, read, ns, body)

    # ------------------------------------------------------------------ read

    def get_job(self, ns: str, name: str) -> Obj | None:
        return _none_if_404(
            lambda: self.batch.read_namespaced_job(name, ns, _preload_content=False)
        )

    def job_pods(self, ns: str, job: Obj) -> list[Obj]:
        """The Job's pods, oldest first (selected by the Job's controller uid)."""
        uid = job["metadata"]["uid"]
        resp = self.core.list_namespaced_pod(
            ns, label_selector=f"batch.kubernetes.io/controller-uid={uid}", _preload_content=False
        )
        pods: list[Obj] = _json(resp).get("items", [])
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    def get_deployment(self, ns: str, name: str) -> Obj | None:
        return _none_if_404(
            lambda: self.apps.read_namespaced_deployment(name, ns, _preload_content=False))

    def pods(self, ns: str, selector: str) -> list[Obj]:
        """Pods matching a label selector, oldest first."""
        resp = self.core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False)
        pods: list[Obj] = _json(resp).get("items", [])
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    def get_secret_value(self, ns: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded (None when the Secret or the key is missing). For small
        settings the operator itself needs (a Slack webhook URL); never logged."""
        import base64

        secret = _none_if_404(
            lambda: self.core.read_namespaced_secret(name, ns, _preload_content=False))
        value = ((secret or {}).get("data") or {}).get(key)
        return base64.b64decode(value).decode(errors="replace") if value is not None else None

    def get_custom(self, plural: str, ns: str, name: str) -> Obj | None:
        return _none_if_404(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, plural, name, _preload_content=False
            )
        )

    def list_custom(self, plural: str, ns: str, selector: str | None = None) -> list[Obj]:
        kwargs: dict[str, Any] = {"_preload_content": False}
        if selector:
            kwargs["label_selector"] = selector
        resp = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural, **kwargs)
        items: list[Obj] = _json(resp).get("items", [])
        return items

    def secret_version(self, ns: str, name: str) -> str | None:
        """A Secret's ``resourceVersion`` (None when it does not exist), read as metadata only
        (PartialObjectMetadata): the Secret's data never reaches the operator. Raises
        Forbidden where RBAC grants no ``get`` on secrets."""
        method, url, headers, body, post = self.api.param_serialize(
            "GET", "/api/v1/namespaces/{namespace}/secrets/{name}",
            path_params={"namespace": ns, "name": name},
            header_params={"Accept": "application/json;as=PartialObjectMetadata;"
                           "g=meta.k8s.io;v=v1"},
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, header_params=headers, body=body,
                                 post_params=post)
        resp.read()  # type: ignore[no-untyped-call]
        if resp.status == 404:
            return None
        if resp.status == 403:
            raise Forbidden(f"get secrets/{name} in {ns}: forbidden")
        if resp.status >= 400:
            raise ApiException(http_resp=resp)
        got = _json(resp)
        return None if got is None else str(got["metadata"].get("resourceVersion") or "")

    def namespace_terminating(self, ns: str) -> bool:
        got = _none_if_404(lambda: self.core.read_namespace(ns, _preload_content=False))
        if got is None:
            return True
        return bool(got["metadata"].get("deletionTimestamp")) or (
            got.get("status", {}).get("phase") == "Terminating"
        )

    # ------------------------------------------------------------------ write

    def patch_status(self, plural: str, ns: str, name: str, status: Obj,
                     resource_version: str | None = None) -> None:
        """Merge-patch ``status`` (lists such as conditions are replaced whole). With
        ``resource_version`` the patch applies only to that version of the object, else
        :class:`Conflict` (safehold.controller.status.write merges conditions that way)."""
        body: Obj = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, plural, name, body, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 409 and resource_version is not None:
                raise Conflict(_reason(exc)) from None
            if exc.status != 404:  # deleted meanwhile: nothing to record
                raise

    def patch_custom(self, plural: str, ns: str, name: str, body: Obj) -> None:
        """Merge-patch an object (spec, labels, annotations); 404 is ignored."""
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, plural, name, body, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_custom(self, plural: str, ns: str, name: str) -> bool:
        """Delete an object (its finalizers run first); False when it was already gone."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, ns, plural, name, _preload_content=False
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def delete_job(self, ns: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods; False when it was already gone."""
        try:
            self.batch.delete_namespaced_job(
                name, ns, propagation_policy="Background", _preload_content=False
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def delete_deployment(self, ns: str, name: str) -> bool:
        """Delete a Deployment in the foreground: it is gone only once its pods are (so a
        replacement never runs beside it); False when it was already gone."""
        try:
            self.apps.delete_namespaced_deployment(
                name, ns, propagation_policy="Foreground", _preload_content=False)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def event(self, obj: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        """Post a core/v1 Event about ``obj``; best effort (a lost event is logged, not raised)."""
        meta = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {
                "name": f"{meta['name'][:200]}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": obj.get("kind", ""),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "safehold-operator"},
            "reportingComponent": "safehold.dev/operator",
            "reportingInstance": "safehold-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        log.log(
            logging.WARNING if warning else logging.INFO,
            "%s %s/%s: %s: %s", obj.get("kind"), meta["namespace"], meta["name"], reason, message,
        )
        try:
            self.core.create_namespaced_event(meta["namespace"], _any(body), _preload_content=False)
        except ApiException as exc:
            log.warning("event %s for %s/%s not posted: %s", reason, meta["namespace"],
                        meta["name"], _reason(exc))


def _any(body: object) -> Any:
    """Dict bodies are accepted where the client's annotations name model classes."""
    return body


def _none_if_404(call: Any) -> Obj | None:
    try:
        return _json(call())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


def transient(exc: BaseException) -> bool:
    """Whether the API server may well accept the same call again: it was overloaded,
    unreachable or timed out (a 4xx other than 429 is an answer, not a hiccup)."""
    import urllib3

    if isinstance(exc, ApiException):
        return exc.status in RETRIED_STATUSES or not exc.status
    return isinstance(exc, urllib3.exceptions.HTTPError | TimeoutError | ConnectionError)
