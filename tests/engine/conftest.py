"""The executors every engine test runs on: the local one, and Ray (``-m ray`` selects only
those runs, ``-m "not ray"`` leaves them out)."""

import pytest


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole test session (starting one takes seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request):
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    return request.param
