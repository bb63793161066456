"""The one module that talks to the Kubernetes API.

Everything else hands it plain dicts and gets plain dicts back (camelCase, as on the wire).
Writes are server-side apply with field manager ``modelship`` and ``force=True``: the operator
owns every field it sets on its children and takes them back from whoever changed them.

Errors are classified once, here: :class:`Rejected` (the API server refused the object as
invalid, HTTP 400/422 - the user's spec produced it, retrying will not help), :class:`Refused`
(any other answer that refuses the request: HTTP 500 "duplicate entries", 403, 409, ... - the
pass reports it in status at once, the runtime retries it) and :class:`Retryable` (no answer
or "try later": connection errors, timeouts, 429/503/504).

With leader election on, writes first ask ``may_write`` (the elector's "do I still hold the
Lease, with margin?"): a replica that lost it raises :class:`NotLeader` instead of writing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from modelship_operator.core import api

Obj = dict[str, Any]

logger = logging.getLogger(__name__)

FIELD_MANAGER = "modelship"
APPLY = "application/apply-patch+yaml"
#: Characters an apply body must not carry raw: YAML refuses C1 controls, lone surrogates and
#: the non-characters U+FFFE/U+FFFF, and folds U+0085/U+2028/U+2029 as line breaks.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def apply_body(obj: Mapping[str, Any]) -> bytes:
    """The server-side apply body: JSON (which is YAML), as UTF-8.

    Not the client's own ``json.dumps``: it escapes every character beyond the BMP as a UTF-16
    surrogate pair (``"\\ud83d\\ude00"``), which JSON allows and the API server's YAML parser
    refuses ("found invalid Unicode character escape code"), so one emoji in an env value or a
    label failed every apply of the Deployment (found by the fuzzed ModelDeployments, issue 13).
    Those characters go raw; the few YAML may not carry raw are escaped.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8", "surrogatepass")


MERGE = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed."""


class Rejected(KubeError):
    """The API server rejected an object as invalid (400/422): the spec must change."""


class Retryable(KubeError):
    """A failure that may go away: conflict, throttling, server error, RBAC being installed."""


class Refused(Retryable):
    """The API server answered with an error other than "invalid" or "try later" (e.g. HTTP 500
    for a server-side apply it cannot merge, 403, 409). Reported in status, then retried."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NamespaceTerminating(KubeError):
    """The namespace is being deleted: nothing can be created there, nothing needs to be."""


class NotLeader(KubeError):
    """This replica does not hold the leader Lease (any more): it must not write."""


#: Answers that mean "not now" rather than "no".
_TRY_LATER = frozenset({429, 503, 504})


#: How the API server refuses a server-side apply whose body does not fit the type: an unknown
#: field inside a free-form part of the spec that the operator copies (affinity,
#: env[].valueFrom), a value its Go type cannot hold (a quantity its parser refuses, a count
#: beyond int32). It answers HTTP 500 for these, yet the same body always fails the same way:
#: retried, it was a loop with a Degraded ApplyFailed status (found by the fuzzed
#: ModelDeployments, issue 13). It is the object's fault, reported as such.
CONTENT_REFUSED = ("failed to create typed patch object", "failed to convert new object")


def _classify(error: ApiException, what: str) -> KubeError:
    message = f"{what}: HTTP {error.status} {error.reason}"
    try:
        message = f"{what}: {json.loads(error.body or '').get('message', message)}"
    except (TypeError, ValueError, AttributeError):  # the body is informative only
        pass
    body = str(error.body)
    if error.status == 403 and ("NamespaceTerminating" in body or "being terminated" in body):
        return NamespaceTerminating(message)
    if error.status in (400, 422) or any(marker in body for marker in CONTENT_REFUSED):
        return Rejected(message)
    if error.status and error.status not in _TRY_LATER:
        return Refused(message, int(error.status))
    return Retryable(message)


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


_MISSING = object()


def _call(what: str, fn: Any, *args: Any, missing: Any = _MISSING, **kwargs: Any) -> Any:
    """Run one API call; 404 returns ``missing`` when given; every failure is classified."""
    try:
        return fn(*args, **kwargs)
    except ApiException as error:
        if error.status == 404 and missing is not _MISSING:
            return missing
        raise _classify(error, what) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:  # connection refused, timeouts, TLS
        raise Retryable(f"{what}: {error}") from error


def _json(response: Any) -> Any:
    """The body of a raw (``_preload_content=False``) response, decoded: plain dicts, as on the
    wire. The client's typed models cost more CPU than the API round trip itself at scale, and
    everything here wants dicts anyway."""
    return json.loads(response.data)


class Kube:
    """Entry points over one ApiClient (thread-safe: the reconcile workers share it).

    ``pool_size`` should be at least the number of threads calling it: the client opens a new
    TLS connection for every request beyond the pool and throws it away afterwards.
    """

    def __init__(
        self, client: kubernetes.client.ApiClient | None = None, pool_size: int = 16,
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        if client is None:
            config = kubernetes.client.Configuration.get_default_copy()
            config.connection_pool_maxsize = max(pool_size, 1)
            client = kubernetes.client.ApiClient(config)
        self.client = client
        self.apps = kubernetes.client.AppsV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.policy = kubernetes.client.PolicyV1Api(self.client)
        self.autoscaling = kubernetes.client.AutoscalingV2Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.coordination = kubernetes.client.CoordinationV1Api(self.client)
        self.instance = socket.gethostname()
        self.may_write = may_write

    def _writing(self, what: str) -> None:
        if not self.may_write():
            raise NotLeader(f"{what}: not written, this replica does not hold the leader Lease")

    # -- ModelDeployments ---------------------------------------------------------------

    def get_model_deployment(self, namespace: str, name: str) -> Obj | None:
        response = _call(
            f"get {api.KIND} {namespace}/{name}", self.custom.get_namespaced_custom_object,
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, missing=None, _preload_content=False,
        )
        return None if response is None else _json(response)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj | None:
        """Merge-patch ``status`` (lists such as conditions are replaced whole); returns the
        ModelDeployment as stored. One deleted meanwhile (404) needs no status: None."""
        self._writing(f"patch status of {api.KIND} {namespace}/{name}")
        response = _call(
            f"patch status of {api.KIND} {namespace}/{name}", self.custom.patch_namespaced_custom_object_status,
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": dict(status)},
            _content_type=MERGE, missing=None, _preload_content=False,
        )
        return None if response is None else _json(response)

    def remove_legacy(
        self, namespace: str, name: str, meta: Mapping[str, Any], finalizer: str, annotations: tuple[str, ...]
    ) -> Obj | None:
        """Take ``finalizer`` and ``annotations`` off a ModelDeployment, if it is still at the
        resourceVersion in ``meta`` (else: a conflict, retried). None if it is gone."""
        self._writing(f"update {api.KIND} {namespace}/{name}")
        patch = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "finalizers": [f for f in meta.get("finalizers") or [] if f != finalizer],
                "annotations": {a: None for a in annotations if a in (meta.get("annotations") or {})},
            }
        }
        response = _call(
            f"remove kopf's finalizer from {api.KIND} {namespace}/{name}", self.custom.patch_namespaced_custom_object,
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, patch,
            _content_type=MERGE, missing=None, _preload_content=False,
        )
        return None if response is None else _json(response)

    # -- children -----------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Server-side apply the whole object; returns the object as stored."""
        return self._apply(obj, force=True)[0]

    def apply_new(self, obj: Mapping[str, Any]) -> tuple[Obj, bool]:
        """Server-side apply without force, for an object believed new: where another manager
        set a field to another value (a foreign object of that name) the API server refuses
        with a conflict instead of handing the field over. Returns the object as stored and
        whether this apply created it (HTTP 201)."""
        return self._apply(obj, force=False)

    def hand_over(self, obj: Mapping[str, Any], manager: str) -> Obj | None:
        """Server-side apply ``obj`` (a few fields) as another field ``manager``, without force;
        None when another manager owns one of them with another value (a conflict, HTTP 409):
        then that manager keeps it (see ``core/autoscaling.py``)."""
        try:
            return self._apply(obj, force=False, manager=manager)[0]
        except Refused as error:
            if error.status == 409:
                return None
            raise

    def _apply(self, obj: Mapping[str, Any], *, force: bool, manager: str = FIELD_MANAGER) -> tuple[Obj, bool]:
        kind, meta = obj["kind"], obj["metadata"]
        self._writing(f"apply {kind} {meta['namespace']}/{meta['name']}")
        client: Any
        client, operation = {
            "Deployment": (self.apps, "patch_namespaced_deployment"),
            "Service": (self.core, "patch_namespaced_service"),
            "PodDisruptionBudget": (self.policy, "patch_namespaced_pod_disruption_budget"),
            "HorizontalPodAutoscaler": (self.autoscaling, "patch_namespaced_horizontal_pod_autoscaler"),
        }[kind]

        def send() -> Any:
            # The generated method takes only a dict body and json.dumps it itself (see
            # apply_body): build its request, then send our own bytes as the body (the REST
            # layer passes bytes through as they are).
            request = getattr(client, f"_{operation}_serialize")(
                name=meta["name"], namespace=meta["namespace"], body=dict(obj), pretty=None, dry_run=None,
                field_manager=manager, field_validation=None, force=force, _request_auth=None,
                _content_type=APPLY, _headers=None, _host_index=0,
            )
            method, url, headers, _, post_params = request
            return client.api_client._call_with_legacy_options(
                (method, url, headers, apply_body(obj), post_params), {}, None, False, None, True)

        result = _call(f"apply {kind} {meta['namespace']}/{meta['name']}", send)
        return _json(result), result.status == 201

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        method = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
            # Read only: a pvc:// model's claim must exist before its pods can start.
            "PersistentVolumeClaim": self.core.read_namespaced_persistent_volume_claim,
            "HorizontalPodAutoscaler": self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
        }[kind]
        result = _call(f"get {kind} {namespace}/{name}", method, name, namespace, missing=None, _preload_content=False)
        return None if result is None else _json(result)

    def delete_pdb(self, namespace: str, name: str) -> bool:
        """Delete the PodDisruptionBudget; False if there was none."""
        self._writing(f"delete PodDisruptionBudget {namespace}/{name}")
        deleted = _call(
            f"delete PodDisruptionBudget {namespace}/{name}", self.policy.delete_namespaced_pod_disruption_budget,
            name, namespace, missing=False, _preload_content=False,
        )
        if deleted is not False:
            deleted.drain_conn()
        return deleted is not False

    def delete_hpa(self, namespace: str, name: str) -> bool:
        """Delete the HorizontalPodAutoscaler; False if there was none."""
        self._writing(f"delete HorizontalPodAutoscaler {namespace}/{name}")
        deleted = _call(
            f"delete HorizontalPodAutoscaler {namespace}/{name}",
            self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            name, namespace, missing=False, _preload_content=False,
        )
        if deleted is not False:
            deleted.drain_conn()
        return deleted is not False

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        pods = _call(f"list pods {namespace} {selector}", self.core.list_namespaced_pod, namespace,
                     label_selector=selector, _preload_content=False)
        return _json(pods).get("items") or []

    # -- events -------------------------------------------------------------------------

    def event(self, owner: Mapping[str, Any], type_: str, reason: str, message: str, now: dt.datetime) -> None:
        """Record a core/v1 Event on the ModelDeployment. Best effort: an Event that cannot be
        written is logged and must never fail a reconcile."""
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
            self._writing(f"record event {reason}")
            response = _call(f"record event {reason}", self.core.create_namespaced_event, meta.get("namespace"), body,
                             _preload_content=False)
            response.drain_conn()  # unread, the connection would never go back to the pool
        except NamespaceTerminating:
            pass  # the object and its Events are going away with the namespace
        except NotLeader:
            raise
        except KubeError as error:
            logger.warning("could not record event %s on %s: %s", reason, meta.get("name"), error)

    # -- the leader election Lease (coordination.k8s.io/v1) --------------------------------

    def get_lease(self, namespace: str, name: str, *, timeout: float) -> Obj | None:
        response = _call(
            f"get Lease {namespace}/{name}", self.coordination.read_namespaced_lease, name, namespace,
            missing=None, _preload_content=False, _request_timeout=timeout,
        )
        return None if response is None else _json(response)

    def create_lease(self, namespace: str, body: Mapping[str, Any], *, timeout: float) -> Obj:
        response = _call(
            f"create Lease {namespace}/{body['metadata']['name']}", self.coordination.create_namespaced_lease,
            namespace, dict(body), _preload_content=False, _request_timeout=timeout,
        )
        return _json(response)

    def replace_lease(self, namespace: str, body: Mapping[str, Any], *, timeout: float) -> Obj:
        """PUT the Lease; its ``metadata.resourceVersion`` makes a stale write a conflict (409)."""
        name = body["metadata"]["name"]
        response = _call(
            f"update Lease {namespace}/{name}", self.coordination.replace_namespaced_lease,
            name, namespace, dict(body), _preload_content=False, _request_timeout=timeout,
        )
        return _json(response)
