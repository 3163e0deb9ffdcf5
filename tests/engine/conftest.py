import pytest


@pytest.fixture(params=["local"])
def executor(request):
    """The executor the parametrised engine tests run on."""
    return request.param
