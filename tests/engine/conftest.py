"""The executors every engine test runs on: the local one, and Ray (``-m ray`` selects only
those runs, ``-m "not ray"`` leaves them out). With ``RAY_ADDRESS`` set, the Ray runs go to
that cluster (tests/executors/test_ray_cluster.py runs them on two nodes)."""

import os

import pytest


@pytest.fixture(scope="session")
def ray_instance():
    """One Ray instance for the whole test session (starting one takes seconds): a local one,
    or the cluster at ``RAY_ADDRESS``."""
    ray = pytest.importorskip("ray")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
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
