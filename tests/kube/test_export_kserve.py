"""``fanflow export kserve RUN``: for a run the real engine finished, one InferenceService per
selected model and the gateway (Deployment + Service) in front of them."""

from __future__ import annotations

import re

import pytest
import yaml

from fanflow.kube import kserve
from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from tests.kube.helpers import EXAMPLES, IMAGE, STORE, run_kube
from tests.kube.schemas import check_inference_service as check_crd
from tests.kube.schemas import check_kubernetes, kserve_errors

# KServe's ComponentExtensionSpec (serving.kserve.io/v1beta1): what a predictor holds beside
# a PodSpec's fields.
COMPONENT_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "containerConcurrency",
    "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
    "autoScaling",
}  # fmt: skip
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A succeeded run of a small workflow whose selection step returns candidates with a
    real model file (one training fails; the quorum tolerates it)."""
    home = tmp_path_factory.mktemp("home")
    project = Project(home)
    result = project.run(load_workflow(EXAMPLES / "train_select.yaml"))
    project.close()
    assert result.state == "succeeded", result.error
    return home, result.run_id


def _export(home, *args):
    return run_kube("export", "kserve", *args, "--home", str(home), "--image", IMAGE)


def check_inference_service(document: dict) -> None:
    """The InferenceService against KServe's own CRD schema (strictly), and its predictor's
    pod fields against Kubernetes' own strict PodSpec schema."""
    check_crd(document)
    assert DNS_1035.match(document["metadata"]["name"]) and len(document["metadata"]["name"]) <= 45
    predictor = dict(document["spec"]["predictor"])
    component = {k: predictor.pop(k) for k in list(predictor) if k in COMPONENT_FIELDS}
    assert component.get("minReplicas", 1) >= 1
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": predictor}
    check_kubernetes(pod)


def test_one_inference_service_per_selected_model_and_a_gateway(finished, tmp_path):
    home, run_id = finished
    out = tmp_path / "kserve.yaml"
    result = _export(home, run_id, "--artifacts", STORE, "--namespace", "ml", "--output", str(out))
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in documents] == ["InferenceService", "InferenceService", "Deployment", "Service"]
    project = Project(home)
    selected = next(t["output"] for t in project.store.tasks(run_id) if t["name"] == "select")
    project.close()
    assert [c["name"] for c in selected] == ["large", "medium"]
    members = []
    for document, candidate in zip(documents[:2], selected, strict=True):
        check_inference_service(document)
        assert document["metadata"]["name"] == f"train-select-{candidate['name']}"
        assert document["metadata"]["namespace"] == "ml"
        container = document["spec"]["predictor"]["containers"][0]
        artifact = candidate["model"]["$artifact"] + candidate["model"]["suffix"]
        assert container["command"] == ["python", "-m", "fanflow.serving.model_server"]
        assert container["args"] == [
            "--store", STORE, "--artifact", artifact, "--name", candidate["name"],
            "--host", "0.0.0.0", "--port", "8080",
        ]  # fmt: skip
        assert document["metadata"]["labels"]["fanflow.dev/run"] == run_id
        members.append(
            f"{candidate['name']}=http://{document['metadata']['name']}-predictor.ml.svc.cluster.local"
        )
    deployment, service = documents[2:]
    check_kubernetes(deployment)
    check_kubernetes(service)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--member"] == members
    assert args[args.index("--strategy") + 1] == "union"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == 8080


def test_the_schema_check_catches_a_bad_container_and_unknown_keys():
    document = kserve.inference_service("x", IMAGE, kserve.Server("m", ["python", "-m", "m"]))
    check_inference_service(document)
    document["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = 3
    assert any("imagePullPolicy" in e for e in kserve_errors(document))
    document["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = "Always"
    document["spec"]["predictor"]["minReplica"] = 1
    assert any("'minReplica' was unexpected" in e for e in kserve_errors(document))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["no-such-run", "--artifacts", STORE], "no run 'no-such-run'"),
        (["{run}"], "which the cluster cannot read"),
        (
            ["{run}", "--artifacts", STORE, "--select", "data"],
            "--select data: its output is not a list of selected models",
        ),
        (["{run}", "--artifacts", STORE, "--select", "nope"], "--select 'nope': the run has no such step"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(finished, args, words):
    home, run_id = finished
    result = _export(home, *(a.format(run=run_id) for a in args))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_a_run_that_did_not_succeed_is_refused(tmp_path):
    path = tmp_path / "fails.yaml"
    path.write_text(
        "name: fails\nsteps:\n  a:\n    uses: k8s_example_steps:train\n    with: {data: {rows: []}, model: broken}\n"
    )
    (tmp_path / "k8s_example_steps.py").write_text((EXAMPLES / "k8s_example_steps.py").read_text())
    project = Project(tmp_path / "home")
    result = project.run(load_workflow(path))
    project.close()
    assert result.state == "failed"
    exported = _export(tmp_path / "home", result.run_id, "--artifacts", STORE)
    assert exported.returncode == 2
    assert f"run {result.run_id} is failed: export the models of a succeeded run" in exported.stderr


def test_names_stay_valid_and_distinct_when_long():
    documents = kserve.export_run(
        "a-very-long-workflow-name-that-goes-on-and-on",
        "r1",
        [
            {"name": "model_with_an_extremely_long_name_one", "model": {"$artifact": "sha256:" + "1" * 64}},
            {"name": "model_with_an_extremely_long_name_two", "model": {"$artifact": "sha256:" + "2" * 64}},
        ],
        image=IMAGE,
        artifacts=STORE,
    )
    names = [d["metadata"]["name"] for d in documents[:2]]
    assert len(set(names)) == 2 and all(DNS_1035.match(n) and len(n) <= 45 for n in names)


def test_models_whose_names_make_the_same_inference_service_are_refused_naming_both():
    candidates = [
        {"name": "cnn_small", "model": {"$artifact": "sha256:" + "1" * 64}},
        {"name": "CNN-small", "model": {"$artifact": "sha256:" + "2" * 64}},
    ]
    with pytest.raises(kserve.ServiceError) as caught:
        kserve.export_run("wf", "r1", candidates, image=IMAGE, artifacts=STORE)
    assert "models 'cnn_small' and 'CNN-small' would both be InferenceService 'wf-cnn-small'" in str(
        caught.value
    )


def test_a_servers_port_is_its_containers_port():
    server = kserve.server_command(kserve.MODEL_SERVER, {"model": "sha256:" + "1" * 64, "port": 9000}, STORE)
    document = kserve.inference_service("x", IMAGE, server)
    container = document["spec"]["predictor"]["containers"][0]
    assert container["ports"] == [{"containerPort": 9000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["port"] == 9000
    assert container["args"][-2:] == ["--port", "9000"]
    check_inference_service(document)
    with pytest.raises(kserve.ServiceError, match="taken by Knative"):
        kserve.server_command(kserve.MODEL_SERVER, {"model": "sha256:" + "1" * 64, "port": 8012}, STORE)
