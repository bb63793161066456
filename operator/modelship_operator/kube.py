"""The one module that talks to the Kubernetes API.

Everything else hands it plain dicts and gets plain dicts back (camelCase, as on the wire).
Writes are server-side apply with field manager ``modelship`` and ``force=True``: the operator
owns every field it sets on its children and takes them back from whoever changed them.

Errors are classified once, here: :class:`Rejected` (the API server refused the object as
invalid, HTTP 400/422 - the user's spec produced it, retrying will not help) and
:class:`Retryable` (everything else: conflicts, throttling, outages, missing permissions).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

from modelship_operator import api

Obj = dict[str, Any]

logger = logging.getLogger(__name__)

FIELD_MANAGER = "modelship"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed."""


class Rejected(KubeError):
    """The API server rejected an object as invalid (400/422): the spec must change."""


class Retryable(KubeError):
    """A failure that may go away: conflict, throttling, server error, RBAC being installed."""


def _classify(error: ApiException, what: str) -> KubeError:
    message = f"{what}: HTTP {error.status} {error.reason}"
    try:
        message = f"{what}: {json.loads(error.body).get('message', message)}"
    except (TypeError, ValueError, AttributeError):  # the body is informative only
        pass
    return Rejected(message) if error.status in (400, 422) else Retryable(message)


def load_config(kubeconfig: str | None) -> None:
    """Configure the client library: an explicit kubeconfig, else in-cluster, else $KUBECONFIG/~/.kube."""
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig)
        return
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def connection_info(kubeconfig: str | None) -> kopf.ConnectionInfo:
    """Credentials for kopf's own watches, from the same source as the client library.

    (Re)loads the config each time: kopf calls this again on 401, which picks up rotated tokens.
    """
    load_config(kubeconfig)
    config = kubernetes.client.Configuration.get_default_copy()
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


class Kube:
    """Typed entry points over one ApiClient (thread-safe: handlers run in kopf's executor)."""

    def __init__(self, client: kubernetes.client.ApiClient | None = None) -> None:
        self.client = client or kubernetes.client.ApiClient()
        self.apps = kubernetes.client.AppsV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.policy = kubernetes.client.PolicyV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.instance = socket.gethostname()

    def _plain(self, obj: Any) -> Obj:
        return self.client.sanitize_for_serialization(obj)

    # -- ModelDeployments ---------------------------------------------------------------

    def get_model_deployment(self, namespace: str, name: str) -> Obj | None:
        try:
            return self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise _classify(error, f"get {api.KIND} {namespace}/{name}") from error

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch ``status`` (lists such as conditions are replaced whole)."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": dict(status)}, _content_type=MERGE
            )
        except ApiException as error:
            if error.status == 404:
                return  # deleted meanwhile: nothing to report on
            raise _classify(error, f"patch status of {api.KIND} {namespace}/{name}") from error

    # -- children -----------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Server-side apply the whole object; returns the object as stored."""
        kind, meta = obj["kind"], obj["metadata"]
        method = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget,
        }[kind]
        try:
            result = method(
                meta["name"], meta["namespace"], dict(obj),
                field_manager=FIELD_MANAGER, force=True, _content_type=APPLY,
            )  # fmt: skip
        except ApiException as error:
            raise _classify(error, f"apply {kind} {meta['namespace']}/{meta['name']}") from error
        return self._plain(result)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        method = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
        }[kind]
        try:
            return self._plain(method(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise _classify(error, f"get {kind} {namespace}/{name}") from error

    def delete_pdb(self, namespace: str, name: str) -> bool:
        """Delete the PodDisruptionBudget; False if there was none."""
        try:
            self.policy.delete_namespaced_pod_disruption_budget(name, namespace)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise _classify(error, f"delete PodDisruptionBudget {namespace}/{name}") from error

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        try:
            return self._plain(self.core.list_namespaced_pod(namespace, label_selector=selector)).get("items", [])
        except ApiException as error:
            raise _classify(error, f"list pods {namespace} {selector}") from error

    # -- events -------------------------------------------------------------------------

    def event(self, owner: Mapping[str, Any], type_: str, reason: str, message: str, now: dt.datetime) -> None:
        """Record a core/v1 Event on the ModelDeployment. Best effort: an Event that cannot be
        written must never fail a reconcile."""
        meta = owner.get("metadata", {})
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'modeldeployment')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta.get("namespace"), body)
        except ApiException as error:
            logger.warning("could not record event %s on %s: HTTP %s", reason, meta.get("name"), error.status)
