import pytest

from fanflow.ml.sources import moving_digits

from .helpers import as_memmaps


@pytest.fixture(autouse=True)
def scratch(tmp_path, monkeypatch):
    """Every test writes its step outputs into its own folder, as a task would."""
    folder = tmp_path / "scratch"
    monkeypatch.setenv("FANFLOW_SCRATCH", str(folder))
    monkeypatch.setenv("FANFLOW_CPUS", "1")
    return folder


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ingest")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FANFLOW_SCRATCH", str(folder))
        data = moving_digits(seed=0, train=320, val=80, test=80, previews=1)
    return as_memmaps(data, folder)
