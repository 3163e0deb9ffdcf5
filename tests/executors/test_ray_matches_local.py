"""On Ray, every task of a workflow gets the inputs and gives the outputs it gets and gives
locally, bit for bit (the same JSON text: key order, ``1.0`` against ``1``, integers above
2**53, strings that read as other types), with the same names and the same errors."""

import json

import pytest

from tests.conftest import ROOT
from tests.kube.helpers import run_capturing_inputs

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray
EXAMPLES = ROOT / "tests" / "kube" / "examples"
WORKFLOWS = [
    (ROOT / "examples" / "fanout_sum" / "workflow.yaml", {"n": "4", "delay": "0"}),
    (EXAMPLES / "values.yaml", None),
    (EXAMPLES / "doomed.yaml", None),
]


@pytest.fixture(scope="module")
def ray_up():
    """One local Ray instance for these runs (or the session's, when one is up)."""
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.mark.parametrize(("path", "params"), WORKFLOWS, ids=lambda p: getattr(p, "stem", ""))
def test_every_task_gets_and_gives_on_ray_what_it_does_locally(ray_up, path, params, tmp_path):
    local = run_capturing_inputs(path, tmp_path / "local", params, "local")
    on_ray = run_capturing_inputs(path, tmp_path / "ray", params, "ray")
    assert on_ray.result.state == local.result.state
    assert list(on_ray.result.tasks) == list(local.result.tasks)
    assert set(on_ray.inputs) == set(local.inputs)  # the same tasks started
    for name, task in local.result.tasks.items():
        other = on_ray.result.tasks[name]
        assert other.state is task.state, name
        assert json.dumps(on_ray.inputs.get(name)) == json.dumps(local.inputs.get(name)), (
            f"{name}: inputs differ"
        )
        assert json.dumps(other.output) == json.dumps(task.output), f"{name}: output differs"
        assert other.error == task.error, name
