"""kubectl modelship: argument parsing, rendering, verdicts and errors against an in-memory API."""

from __future__ import annotations

import copy
import datetime as dt
import io
from typing import Any

import pytest

from kubectl_modelship import cli, render
from kubectl_modelship.kube import PluginError

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def md(name: str = "resnet", namespace: str = "ml", *, image: str = "reg/server:1.2", phase: str = "Complete",
       serving: int = 3, stable: int = 3, ready: int = 2, updated: int = 2, manual: bool = False,
       generation: int = 4, observed: int = 4, status_image: str | None = None) -> dict[str, Any]:
    history = [
        {"revision": 1, "hash": "h1", "image": "reg/server:1.0", "model": "file:///m.pt2", "outcome": "Succeeded",
         "startedAt": "2026-11-26T11:00:00Z", "finishedAt": "2026-11-26T11:00:40Z", "reason": "RolloutComplete"},
        {"revision": 2, "hash": "h2", "image": "fail.modelship.test/server:imagepull", "model": "file:///m.pt2",
         "outcome": "RolledBack", "startedAt": "2026-11-26T11:30:00Z", "finishedAt": "2026-11-26T11:30:12Z",
         "reason": "ImagePullFailed"},
        {"revision": 3, "hash": "h3", "image": "reg/server:1.2", "model": "file:///m.pt2", "outcome": "Succeeded",
         "startedAt": "2026-11-26T11:50:00Z", "finishedAt": "2026-11-26T11:51:00Z", "reason": "RolloutComplete"},
    ]
    return {
        "metadata": {"name": name, "namespace": namespace, "generation": generation,
                     "creationTimestamp": "2026-11-26T10:00:00Z"},
        "spec": {"image": image, "replicas": 2},
        "status": {
            "observedGeneration": observed, "image": status_image or image, "stableImage": "reg/server:1.2",
            "readyReplicas": ready, "updatedReplicas": updated, "replicas": 2,
            "conditions": [
                {"type": "Ready", "status": "True" if phase == "Complete" else "False", "reason": "Ready",
                 "message": "2/2 ready", "lastTransitionTime": "2026-11-26T11:51:00Z"},
                {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
                 "lastTransitionTime": "2026-11-26T11:51:00Z"},
            ],
            "history": history,
            "rollout": {"phase": phase, "servingRevision": serving, "stableRevision": stable, "manual": manual,
                        "message": f"serving revision {serving}"},
        },
    }


class FakeApi:
    """Records annotations; an optional ``operator`` callback plays the operator on each get."""

    default_namespace = "ml"

    def __init__(self, *objs: dict[str, Any], namespaces: tuple[str, ...] = ("ml", "default")) -> None:
        self.objs = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}
        self.namespaces = namespaces
        self.annotations: list[dict[str, str]] = []
        self.operator: Any = None
        self.gets = 0

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.gets += 1
        if namespace not in self.namespaces:
            raise PluginError(f'namespace "{namespace}" not found', 2)
        if (namespace, name) not in self.objs:
            raise PluginError(f'modeldeployment "{name}" not found in namespace "{namespace}"', 2)
        obj = self.objs[(namespace, name)]
        if self.operator:
            self.operator(obj, self.gets)
        return copy.deepcopy(obj)

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is not None and namespace not in self.namespaces:
            raise PluginError(f'namespace "{namespace}" not found', 2)
        return [copy.deepcopy(o) for (ns, _), o in sorted(self.objs.items()) if namespace in (None, ns)]

    def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        self.annotations.append(annotations)
        obj = self.objs[(namespace, name)]
        obj["metadata"].setdefault("annotations", {}).update(annotations)
        return obj

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [{"type": "Warning", "reason": "RolledBack", "lastTimestamp": "2026-11-26T11:30:12Z",
                 "message": "rolled back revision 2 (fail.modelship.test/server:imagepull)"}]


class FakeClock:
    def __init__(self) -> None:
        self.t = NOW

    def now(self) -> dt.datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)


def run(api: FakeApi, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), api_factory=lambda _: api, out=out, err=err, clock=FakeClock())
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("ref", ["resnet", "md/resnet", "mdeploy/resnet", "modeldeployments.modelship.io/resnet",
                                 "ModelDeployment/resnet"])
def test_parse_ref_accepts_kubectl_forms(ref: str) -> None:
    assert cli.parse_ref(ref) == "resnet"


@pytest.mark.parametrize(("ref", "needle"), [("deploy/resnet", 'unknown resource type "deploy"'),
                                              ("md/Res_Net", 'invalid name "Res_Net"'), ("md/", "invalid name")])
def test_parse_ref_rejects_with_clear_message(ref: str, needle: str) -> None:
    with pytest.raises(PluginError, match=needle) as info:
        cli.parse_ref(ref)
    assert info.value.code == cli.USAGE


@pytest.mark.parametrize(("text", "seconds"), [("30", 30), ("30s", 30), ("10m", 600), ("1h", 3600), ("1.5m", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == seconds


def test_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["promote", "md/x"])
    assert info.value.code == 2


def test_kubectl_style_flags() -> None:
    args = cli.build_parser().parse_args(["rollback", "md/x", "-n", "ml", "--kubeconfig", "/k", "--context", "c",
                                          "--to-revision", "2"])
    assert (args.namespace, args.kubeconfig, args.context, args.to_revision) == ("ml", "/k", "c", 2)


# ------------------------------------------------------------------ rendering


def test_table_aligns_columns() -> None:
    assert render.table(["A", "LONGER"], [["xyz", 1], ["q", None]]).splitlines() == [
        "A     LONGER", "xyz   1", "q"]


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (90, "1m"), (3 * 3600, "3h"), (3 * 86400, "3d")])
def test_age_like_kubectl(seconds: int, text: str) -> None:
    assert render.age(render.dt.datetime.isoformat(NOW - dt.timedelta(seconds=seconds)), NOW) == text


def test_progress_bar() -> None:
    assert render.progress_bar(1, 2, width=10) == "[#####-----]"
    assert render.progress_bar(0, 0, width=4) == "[####]"
    assert render.progress_bar(5, 2, width=4) == "[####]"


def test_get_lists_table(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(md("a"), md("b", phase="RolledBack"))
    api.objs[("ml", "b")]["status"]["conditions"][1].update(status="True", reason="RolledBack")
    code, out, _ = run(api, "get")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "IMAGE", "READY", "STATUS", "REVISION", "AGE"]
    assert lines[1].split() == ["a", "reg/server:1.2", "2/2", "Ready", "3", "2h"]
    assert lines[2].split()[3] == "RolledBack"


def test_get_all_namespaces_adds_column() -> None:
    _, out, _ = run(FakeApi(md("a"), md("b", namespace="default")), "get", "-A")
    assert out.splitlines()[0].startswith("NAMESPACE") and "default" in out


def test_get_one_shows_images_conditions_and_events() -> None:
    code, out, _ = run(FakeApi(md()), "get", "md/resnet")
    assert code == 0
    assert "Desired image:  reg/server:1.2" in out and "Stable image:   reg/server:1.2 (revision 3)" in out
    assert "CONDITION" in out and "Degraded" in out and "RolledBack" in out


def test_history_marks_serving_and_stable() -> None:
    code, out, _ = run(FakeApi(md()), "history", "md/resnet")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:7] == ["REVISION", "IMAGE", "MODEL", "STARTED", "TOOK", "OUTCOME", "REASON"]
    assert lines[2].split()[0] == "2" and "RolledBack" in lines[2] and "12s" in lines[2]
    assert lines[3].rstrip().endswith("serving,stable")


# ------------------------------------------------------------------ errors


def test_unknown_name_and_namespace_are_clear() -> None:
    code, _, err = run(FakeApi(md()), "get", "md/nope")
    assert code == 2 and err.strip() == 'error: modeldeployment "nope" not found in namespace "ml"'
    code, _, err = run(FakeApi(md()), "history", "md/resnet", "-n", "nowhere")
    assert code == 2 and err.strip() == 'error: namespace "nowhere" not found'


def test_empty_namespace_says_so() -> None:
    code, out, _ = run(FakeApi(), "get", "-n", "default")
    assert code == 0 and out.strip() == "No ModelDeployments found in default namespace."


@pytest.mark.parametrize(("revision", "needle"), [
    ("7", "has no revision 7 (known: 1, 2, 3)"),
    ("2", "revision 2 of resnet never succeeded (outcome RolledBack)"),
])
def test_rollback_rejects_unknown_or_failed_revisions(revision: str, needle: str) -> None:
    api = FakeApi(md())
    code, _, err = run(api, "rollback", "md/resnet", "--to-revision", revision)
    assert code == 2 and needle in err and not api.annotations


# ------------------------------------------------------------------ rollback / retry


def ack(key: str, annotation: str, *, serving: int | None = None, after: int = 2) -> Any:
    """Play the operator: after a few gets, record the annotation's value as handled."""
    def operator(obj: dict[str, Any], gets: int) -> None:
        value = (obj["metadata"].get("annotations") or {}).get(annotation)
        if value and gets >= after:
            obj["status"]["rollout"][key] = value
            if serving is not None:
                obj["status"]["rollout"]["servingRevision"] = serving
    return operator


def test_rollback_to_revision_writes_annotation_and_waits_for_the_operator() -> None:
    api = FakeApi(md())
    api.operator = ack("handledRollbackTo", cli.ROLLBACK_TO_ANNOTATION, serving=1, after=3)
    code, out, err = run(api, "rollback", "md/resnet", "--to-revision", "1")
    assert code == 0, err
    value = api.annotations[0][cli.ROLLBACK_TO_ANNOTATION]
    assert value.startswith("1@") and value.split("@")[1].isdigit()
    assert "rolled back to revision 1 (reg/server:1.0)" in out


def test_rollback_default_is_previous() -> None:
    api = FakeApi(md())
    api.operator = ack("handledRollbackTo", cli.ROLLBACK_TO_ANNOTATION, serving=1)
    code, _, _ = run(api, "rollback", "md/resnet")
    assert code == 0 and api.annotations[0][cli.ROLLBACK_TO_ANNOTATION].startswith("previous@")


def test_rollback_times_out_when_no_operator_answers() -> None:
    code, _, err = run(FakeApi(md()), "rollback", "md/resnet", "--to-revision", "1", "--timeout", "5s")
    assert code == cli.TIMEOUT and "has not acted on the request within 5s" in err


def test_rollback_to_serving_revision_is_a_no_op() -> None:
    api = FakeApi(md())
    code, out, _ = run(api, "rollback", "md/resnet", "--to-revision", "3")
    assert code == 0 and "already serving" in out and not api.annotations


def test_retry_only_after_rollback_or_halt() -> None:
    code, _, err = run(FakeApi(md()), "retry", "md/resnet")
    assert code == 2 and "nothing to retry: modeldeployment resnet is Complete" in err
    api = FakeApi(md(phase="RolledBack", serving=3))
    api.operator = ack("handledRetry", cli.RETRY_ANNOTATION, serving=4)
    code, out, err = run(api, "retry", "md/resnet")
    assert code == 0, err
    assert "retrying reg/server:1.2 as revision 4" in out and cli.RETRY_ANNOTATION in api.annotations[0]


# ------------------------------------------------------------------ watch


def test_watch_exits_zero_on_completion() -> None:
    api = FakeApi(md(phase="Progressing", serving=4, ready=0, updated=1, status_image="reg/server:1.0"))

    def operator(obj: dict[str, Any], gets: int) -> None:
        if gets == 3:
            obj["status"].update(readyReplicas=1)
        if gets >= 5:
            obj["status"].update(readyReplicas=2, updatedReplicas=2, image="reg/server:1.2")
            obj["status"]["rollout"]["phase"] = "Complete"
    api.operator = operator
    code, out, _ = run(api, "watch", "md/resnet")
    lines = out.splitlines()
    assert code == 0 and lines[-1].startswith("rollout complete")
    assert "[----------" in lines[0] and "updated 2/2 ready 2/2" in lines[-2]


def test_watch_exits_non_zero_on_rollback() -> None:
    api = FakeApi(md(phase="Progressing", serving=4))

    def operator(obj: dict[str, Any], gets: int) -> None:
        if gets >= 2:
            obj["status"]["rollout"].update(phase="RolledBack", message="rolled back revision 4 (x) to stable")
    api.operator = operator
    code, out, _ = run(api, "watch", "md/resnet")
    assert code == 1 and out.splitlines()[-1] == "rolled back revision 4 (x) to stable"


def test_watch_waits_for_the_operator_to_see_the_spec() -> None:
    obj = md(phase="Complete", generation=5, observed=4)
    assert render.verdict(obj).code is None
    obj["status"]["observedGeneration"] = 5
    assert render.verdict(obj).code == 0


def test_watch_halted_and_manual_rollback_are_failures() -> None:
    assert render.verdict(md(phase="Halted")).code == 1
    assert "is not serving" in render.verdict(md(phase="RolledBack", manual=True)).message


def test_watch_times_out() -> None:
    code, out, _ = run(FakeApi(md(phase="Progressing")), "watch", "md/resnet", "--timeout", "3s")
    assert code == cli.TIMEOUT and "timed out after 3s" in out


def test_long_messages_are_shortened_in_tables_only() -> None:
    obj = md()
    long = "rolled back " + "x" * 300
    obj["status"]["conditions"][1].update(status="True", reason="RolledBack", message=long)
    obj["status"]["rollout"]["message"] = long
    text = render.render_detail(obj, [], NOW)
    assert long in text  # the Rollout: line keeps it whole
    table = text.split("CONDITION")[1]
    assert long not in table and max(len(line) for line in table.splitlines()) < 160
