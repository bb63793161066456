"""Every branch of the pure builders: GPU or not, probes, names, PDB, security, strategy."""

import re

import pytest

from modelship_operator.core import api, builders

from .samples import body, md

GPU = {"count": 2, "product": "NVIDIA-H100-80GB-HBM3"}


def _container(dep):
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container


def _env(dep):
    return {e["name"]: e.get("value") for e in _container(dep)["env"]}


def test_cpu_deployment_has_no_gpu_fields():
    dep = builders.desired_deployment(md())
    pod = dep["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(dep)
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert _env(dep)["MODELSHIP_DEVICE"] == "cpu"
    assert _env(dep)["MODELSHIP_REQUIRE_GPU"] == "false"


def test_gpu_count_zero_is_cpu():
    dep = builders.desired_deployment(md(gpu={"count": 0, "product": "X"}))
    assert "nvidia.com/gpu" not in str(dep)


def test_gpu_deployment_limits_selects_and_tolerates():
    dep = builders.desired_deployment(md(gpu=GPU, nodeSelector={"zone": "a"}))
    pod = dep["spec"]["template"]["spec"]
    assert _container(dep)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"zone": "a", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert _env(dep)["MODELSHIP_DEVICE"] == "cuda"
    assert _env(dep)["MODELSHIP_REQUIRE_GPU"] == "true"


def test_gpu_without_product_has_no_product_selector():
    pod = builders.desired_deployment(md(gpu={"count": 1}))["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    assert len(pod["tolerations"]) == 1


def test_user_toleration_for_gpu_taint_is_not_duplicated():
    tol = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    pod = builders.desired_deployment(md(gpu={"count": 1}, tolerations=[tol]))["spec"]["template"]["spec"]
    assert pod["tolerations"] == [tol]


def test_resources_merge_requests_limits_and_gpu():
    dep = builders.desired_deployment(
        md(gpu={"count": 1}, resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}})
    )
    assert _container(dep)["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": 1},
    }
    assert "resources" in _container(builders.desired_deployment(md()))
    assert _container(builders.desired_deployment(md()))["resources"] == {}


@pytest.mark.parametrize(
    ("timeout", "period", "threshold"),
    [(600, 5, 120), (900, 10, 90), (7, 5, 2), (1, 5, 1), (61, 10, 7)],
)
def test_startup_budget_covers_timeout(timeout, period, threshold):
    dep = builders.desired_deployment(md(probes={"startupTimeoutSeconds": timeout, "startupPeriodSeconds": period}))
    startup = _container(dep)["startupProbe"]
    assert startup["failureThreshold"] == threshold
    assert startup["periodSeconds"] == period
    assert startup["failureThreshold"] * startup["periodSeconds"] >= timeout


def test_probe_paths_and_defaults():
    c = _container(builders.desired_deployment(md()))
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    assert c["readinessProbe"]["periodSeconds"] == 5 and c["readinessProbe"]["failureThreshold"] == 3
    assert c["livenessProbe"]["periodSeconds"] == 10


def test_probe_overrides_replace_only_given_fields():
    c = _container(
        builders.desired_deployment(md(probes={"readiness": {"periodSeconds": 2}, "liveness": {"failureThreshold": 9}}))
    )
    assert c["readinessProbe"]["periodSeconds"] == 2 and c["readinessProbe"]["timeoutSeconds"] == 3
    assert c["livenessProbe"]["failureThreshold"] == 9 and c["livenessProbe"]["periodSeconds"] == 10


def test_security_context_is_restricted():
    dep = builders.desired_deployment(md())
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = _container(dep)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in _container(dep)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_server_env_contract():
    dep = builders.desired_deployment(
        md(
            serving={"port": 9000, "batching": {"maxBatchSize": 32, "maxLatencyMs": 7}, "halfPrecision": True},
            env=[{"name": "MODELSHIP_LOG_LEVEL", "value": "debug"}],
        )
    )
    env = _env(dep)
    assert env["MODELSHIP_MODEL_NAME"] == "resnet"
    assert env["MODELSHIP_MODEL_URI"] == "file:///models/resnet18.pt2"
    assert env["MODELSHIP_MODEL_FORMAT"] == "torch-export"
    assert "MODELSHIP_MODEL_HANDLER" not in env and "MODELSHIP_MODEL_SHA256" not in env
    assert env["MODELSHIP_HOST"] == "0.0.0.0" and env["MODELSHIP_PORT"] == "9000"
    assert env["MODELSHIP_MAX_BATCH_SIZE"] == "32" and env["MODELSHIP_MAX_LATENCY_MS"] == "7"
    assert env["MODELSHIP_HALF_PRECISION"] == "true"
    assert env["MODELSHIP_LOG_LEVEL"] == "debug"
    assert all(isinstance(v, str) for v in env.values())
    assert _container(dep)["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]


def test_a_model_that_cannot_load_ends_the_server_with_its_reason():
    dep = builders.desired_deployment(md())
    assert _env(dep)["MODELSHIP_EXIT_ON_LOAD_FAILURE"] == "true"
    assert _container(dep)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_handler_format_and_checksum_reach_the_server():
    sha = "a" * 64
    dep = builders.desired_deployment(
        md(model={"name": "m", "uri": "/m", "format": "handler", "handler": "pkg.mod:Model", "sha256": sha})
    )
    assert _env(dep)["MODELSHIP_MODEL_HANDLER"] == "pkg.mod:Model"
    assert _env(dep)["MODELSHIP_MODEL_SHA256"] == sha


def test_input_shape_reaches_the_server_only_when_given():
    shaped = builders.desired_deployment(
        md(model={"name": "m", "uri": "/m.pt", "format": "torchscript", "inputShape": [-1, 3, 32, 32],
                  "inputDatatype": "FP16"})
    )
    assert _env(shaped)["MODELSHIP_INPUT_SHAPE"] == "-1,3,32,32"
    assert _env(shaped)["MODELSHIP_INPUT_DATATYPE"] == "FP16"
    plain = _env(builders.desired_deployment(md()))
    assert "MODELSHIP_INPUT_SHAPE" not in plain and "MODELSHIP_INPUT_DATATYPE" not in plain


@pytest.mark.parametrize("shape", [[0, 3], [-2, 3], []])
def test_bad_input_shape_is_refused(shape):
    with pytest.raises(api.InvalidSpec, match="inputShape"):
        api.parse(body(model={"name": "m", "uri": "/m.pt", "format": "torchscript", "inputShape": shape}))


def test_shutdown_budget_bounds_the_grace_period():
    dep = builders.desired_deployment(md(serving={"shutdownDelaySeconds": 10, "drainTimeoutSeconds": 50}))
    env = _env(dep)
    assert env["MODELSHIP_SHUTDOWN_DELAY_S"] == "10" and env["MODELSHIP_GRACEFUL_TIMEOUT_S"] == "50"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 65
    default = builders.desired_deployment(md())
    assert default["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5 + 30 + 5


def test_explicit_device_wins():
    assert _env(builders.desired_deployment(md(gpu={"count": 1}, serving={"device": "cuda:1"})))["MODELSHIP_DEVICE"] == "cuda:1"
    assert _env(builders.desired_deployment(md(serving={"device": "auto"})))["MODELSHIP_DEVICE"] == "auto"


@pytest.mark.parametrize(
    ("surge", "gpu", "expected"),
    [
        ("auto", None, builders.SURGE),
        # auto means one thing everywhere: surge, until the rollout engine sees a surge pod short
        # of GPUs (then no-surge, see test_rollout). It used to be no-surge here for GPU pods.
        ("auto", {"count": 1}, builders.SURGE),
        ("auto", {"count": 0}, builders.SURGE),
        ("surge", {"count": 1}, builders.SURGE),
        ("no-surge", None, builders.NO_SURGE),
    ],
)
def test_strategy_by_surge(surge, gpu, expected):
    dep = builders.desired_deployment(md(gpu=gpu, rollout={"surge": surge}))
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": expected}


def test_surge_override_and_image_override_are_rollout_seams():
    m = md(gpu={"count": 1})
    dep = builders.desired_deployment(m, image="registry.example.com/ml/resnet-server:1.4.1", surge="surge")
    assert dep["spec"]["strategy"]["rollingUpdate"] == builders.SURGE
    assert _container(dep)["image"] == "registry.example.com/ml/resnet-server:1.4.1"
    assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "1.4.1"


def test_deployment_shape_and_ownership():
    dep = builders.desired_deployment(md(rollout={"progressDeadlineSeconds": 120}))
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    assert dep["metadata"]["name"] == "resnet" and dep["metadata"]["namespace"] == "ml"
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "modelship.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "resnet",
            "uid": "1234-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["progressDeadlineSeconds"] == 120
    assert dep["spec"]["revisionHistoryLimit"] == builders.REVISION_HISTORY_LIMIT
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= template_labels.items()


def test_recommended_labels():
    labels = builders.desired_deployment(md())["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "modelship-server",
        "app.kubernetes.io/instance": "resnet",
        "app.kubernetes.io/version": "1.4.2",
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "modelship",
        "app.kubernetes.io/managed-by": "modelship",
    }


def test_selector_does_not_depend_on_image():
    a = builders.desired_deployment(md())
    b = builders.desired_deployment(md(image="registry.example.com/ml/resnet-server:2.0.0"))
    assert a["spec"]["selector"] == b["spec"]["selector"]
    assert builders.selector_string(md()) == "app.kubernetes.io/instance=resnet,app.kubernetes.io/name=modelship-server"


LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "name",
    [
        "a" * 63,
        "a" * 64,
        "b" * 253,
        "my.model.with.dots",
        "7-starts-with-a-digit",
        "x-" + "long-segment-" * 20 + "end",
    ],
)
def test_long_and_odd_names_fit_every_limit(name):
    m = md(name=name)
    child = builders.child_name(name)
    assert len(child) <= 63 and LABEL.match(child), child
    for obj in (builders.desired_deployment(m), builders.desired_service(m), builders.desired_pdb(md(name=name, disruptionBudget={"maxUnavailable": 1}))):
        assert obj["metadata"]["name"] == child
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63
        assert obj["metadata"]["ownerReferences"][0]["name"] == name


def test_child_names_are_stable_and_distinct():
    a, b = "a" * 70 + "x", "a" * 70 + "y"
    assert builders.child_name(a) == builders.child_name(a)
    assert builders.child_name(a) != builders.child_name(b)
    assert builders.child_name("resnet") == "resnet"


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("repo/x:1.0", "1.0"),
        ("host:5000/repo/x:v2-rc.1", "v2-rc.1"),
        ("repo/x@sha256:" + "ab" * 32, "abababababab"),
        ("repo/x:1.0@sha256:" + "cd" * 32, "cdcdcdcdcdcd"),
        ("repo/x:" + "t" * 128, "t" * 63),
    ],
)
def test_version_label(image, version):
    assert builders.image_version(image) == version


def test_service():
    svc = builders.desired_service(md(serving={"port": 8080}))
    assert svc["kind"] == "Service" and svc["metadata"]["name"] == "resnet"
    assert svc["spec"]["selector"] == builders.selector_labels(md())
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"


def test_pdb_off_by_default():
    assert builders.desired_pdb(md()) is None


@pytest.mark.parametrize(
    ("budget", "key", "value"),
    [({"minAvailable": 1}, "minAvailable", 1), ({"maxUnavailable": "25%"}, "maxUnavailable", "25%")],
)
def test_pdb_on(budget, key, value):
    pdb = builders.desired_pdb(md(disruptionBudget=budget))
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["spec"][key] == value
    assert len([k for k in ("minAvailable", "maxUnavailable") if k in pdb["spec"]]) == 1
    assert pdb["spec"]["selector"]["matchLabels"] == builders.selector_labels(md())
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_builders_are_deterministic():
    assert builders.desired_deployment(md(gpu=GPU)) == builders.desired_deployment(md(gpu=GPU))


def test_owner_is_found_from_children_and_pods():
    long = "x" * 200
    m = md(name=long)
    dep = builders.desired_deployment(m)
    assert builders.owner_name(dep) == long
    pod = {"metadata": dep["spec"]["template"]["metadata"]}
    assert builders.owner_name(pod) == long
    bare = {"metadata": {"ownerReferences": dep["metadata"]["ownerReferences"]}}
    assert builders.owner_name(bare) == long
    assert builders.owner_name({"metadata": {}}) is None


def test_grpc_gets_a_container_port_and_a_service_port_only_when_enabled():
    off = builders.desired_deployment(md())
    assert [p["name"] for p in _container(off)["ports"]] == ["http"]
    assert [p["name"] for p in builders.desired_service(md())["spec"]["ports"]] == ["http"]
    on = md(serving={"grpc": {"enabled": True, "port": 9100}})
    assert _container(builders.desired_deployment(on))["ports"][1] == {"name": "grpc", "containerPort": 9100, "protocol": "TCP"}
    assert builders.desired_service(on)["spec"]["ports"][1] == {
        "name": "grpc", "port": 9100, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
    with pytest.raises(api.InvalidSpec, match=r"grpc\.port must differ"):
        md(serving={"port": 9100, "grpc": {"enabled": True, "port": 9100}})


def test_a_shared_model_process_gets_a_memory_backed_dev_shm():
    def mounts(**serving):
        dep = builders.desired_deployment(md(serving=serving))
        return {m["mountPath"]: m["name"] for m in _container(dep)["volumeMounts"]}, dep["spec"]["template"]["spec"]["volumes"]

    assert mounts()[0] == {"/tmp": "tmp"}
    assert mounts(workers=4, modelProcess="per-worker")[0] == {"/tmp": "tmp"}
    paths, volumes = mounts(workers=4, modelProcess="shared")
    assert paths["/dev/shm"] == "dshm"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{16 * 5}Mi"}} in volumes
