"""The plugin's only module that talks to the Kubernetes API."""

from __future__ import annotations

import json
import os
from typing import Any

GROUP, VERSION, PLURAL, KIND = "modelship.io", "v1alpha1", "modeldeployments", "ModelDeployment"


class PluginError(Exception):
    """An error to print as ``error: ...`` with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


NOT_FOUND, API_ERROR = 2, 4


class Client:
    """A kubeconfig- (or in-cluster-) configured client with the few calls the plugin needs."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config  # imported here: `--help` works without a cluster

        self._client_mod = client
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        self.default_namespace = "default"
        try:
            api = config.new_client_from_config(config_file=path, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=path)
            chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
            self.default_namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        except config.ConfigException as exc:
            if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise PluginError(f"cannot load kubeconfig: {exc}", API_ERROR) from exc
            conf = client.Configuration()
            config.load_incluster_config(client_configuration=conf)
            api = client.ApiClient(conf)
            try:
                with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as fh:
                    self.default_namespace = fh.read().strip() or "default"
            except OSError:
                pass
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise _api_error(what, exc) from exc
        except Exception as exc:  # connection refused, TLS, DNS: say so plainly
            if isinstance(exc, PluginError):
                raise
            raise PluginError(f"cannot reach the cluster ({what}): {exc}", API_ERROR) from exc

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self._call(f"get {name}", self._custom.get_namespaced_custom_object,
                              GROUP, VERSION, namespace, PLURAL, name)
        except PluginError as err:
            if err.code == NOT_FOUND:
                raise self._not_found(namespace, name) from err
            raise

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            body = self._call("list", self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            body = self._call("list", self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
            if not body.get("items") and not self.namespace_exists(namespace):
                raise PluginError(f'namespace "{namespace}" not found', NOT_FOUND)
        return sorted(body.get("items") or [], key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        body = {"metadata": {"annotations": annotations}}
        return self._call(f"annotate {name}", self._custom.patch_namespaced_custom_object,
                          GROUP, VERSION, namespace, PLURAL, name, body,
                          _content_type="application/merge-patch+json")

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        try:
            resp = self._core.list_namespaced_event(namespace, field_selector=selector, _preload_content=False)
            return list(json.loads(resp.data).get("items") or [])
        except Exception:  # noqa: BLE001 — events are a nicety; RBAC may forbid them
            return []

    def namespace_exists(self, namespace: str) -> bool:
        """False only when the API says 404; unknown (e.g. forbidden) counts as existing."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.read_namespace(namespace)
        except ApiException as exc:
            return exc.status != 404
        except Exception:  # noqa: BLE001
            return True
        return True

    def _not_found(self, namespace: str, name: str) -> PluginError:
        if not self.namespace_exists(namespace):
            return PluginError(f'namespace "{namespace}" not found', NOT_FOUND)
        return PluginError(f'modeldeployment "{name}" not found in namespace "{namespace}"', NOT_FOUND)


def _api_error(what: str, exc: Any) -> PluginError:
    message = exc.reason or str(exc)
    try:
        message = json.loads(exc.body).get("message") or message
    except (TypeError, ValueError, AttributeError):
        pass
    if exc.status == 404:
        if "the server could not find the requested resource" in str(message):
            return PluginError("the ModelDeployment CRD is not installed in this cluster "
                               "(kubectl apply -f deploy/crds/)", NOT_FOUND)
        return PluginError(str(message), NOT_FOUND)
    return PluginError(f"{what}: {message}", API_ERROR)
