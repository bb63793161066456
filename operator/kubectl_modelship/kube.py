"""The plugin's only module that talks to the Kubernetes API."""

from __future__ import annotations

import builtins
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
        # No CoreV1Api: building it costs seconds (thousands of validated methods) for the two
        # reads below, which go through the raw REST call instead.

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

    def _raw_get(self, path: str, params: dict[str, str], query: builtins.list[tuple[str, str]] | None = None
                 ) -> tuple[int, dict[str, Any]]:
        """GET a core-API path; (HTTP status, JSON body). Never raises for HTTP errors."""
        call = self._api.param_serialize(method="GET", resource_path=path, path_params=params,
                                         query_params=query or [], header_params={"Accept": "application/json"},
                                         auth_settings=["BearerToken"])
        resp = self._api.call_api(*call)
        resp.read()
        try:
            return resp.status, json.loads(resp.data or b"{}")
        except ValueError:
            return resp.status, {}

    def events(self, namespace: str, name: str) -> builtins.list[dict[str, Any]]:
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        try:
            code, body = self._raw_get("/api/v1/namespaces/{namespace}/events", {"namespace": namespace},
                                       [("fieldSelector", selector)])
        except Exception:  # noqa: BLE001 — events are a nicety; RBAC may forbid them
            return []
        return list(body.get("items") or []) if code == 200 else []

    def namespace_exists(self, namespace: str) -> bool:
        """False only when the API says 404; unknown (e.g. forbidden) counts as existing."""
        try:
            code, _ = self._raw_get("/api/v1/namespaces/{name}", {"name": namespace})
        except Exception:  # noqa: BLE001
            return True
        return code != 404

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
