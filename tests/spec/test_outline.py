"""Module outlines: what `fanflow validate` reads of a step's module without running it, kept
on disk like bytecode. Faults are injected into the real cache files."""

import json
import os

import pytest

from fanflow.spec import outline as outlines
from fanflow.spec.validate import function_problems
from tests.conftest import ROOT


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    outlines._outline.cache_clear()
    yield outlines.cache_folder()
    outlines._outline.cache_clear()


def _fresh(origin):
    outlines._outline.cache_clear()  # as a new process would: only the disk remembers
    return outlines.outline(str(origin))


def test_an_outline_read_back_from_the_cache_is_the_one_read_from_the_source(cache):
    origin = ROOT / "fanflow" / "ml" / "sources.py"
    first = _fresh(origin)
    assert len(list(cache.glob("*.json"))) == 1
    again = _fresh(origin)
    assert again == first == outlines.from_source(origin.read_text(encoding="utf-8"))
    assert again.bindings["clips"].function


def test_an_edited_module_is_read_again_even_at_the_same_size(cache, workdir):
    module = workdir / "edited_steps.py"
    module.write_text("def fit(alpha):\n    return alpha\n")
    assert function_problems("edited_steps:fit", ["alpha"]) == []
    stat = module.stat()
    module.write_text("def fit(gamma):\n    return gamma\n")  # same size, so only the time tells
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    outlines._outline.cache_clear()
    problems = [message for message, _ in function_problems("edited_steps:fit", ["alpha"])]
    assert problems == ["edited_steps:fit takes no argument 'alpha'",
                        "edited_steps:fit needs 'gamma', which the step's with does not give"]


@pytest.mark.parametrize("damage", [b"", b"\x00\xff garbage", b'{"key": 1}', b"[]", b'{"key": {}, "outline": 3}'])
def test_a_damaged_cache_file_is_read_past_and_replaced(cache, workdir, damage):
    module = workdir / "damaged_steps.py"
    module.write_text("LIMIT = 3\n\ndef fit(alpha, *, beta=2):\n    return alpha\n")
    expected = _fresh(module)
    (cached,) = cache.glob("*.json")
    cached.write_bytes(damage)
    assert _fresh(module) == expected
    assert json.loads(cached.read_text())["outline"]["bindings"]["fit"][1] is True
    assert function_problems("damaged_steps:LIMIT", []) == [("damaged_steps:LIMIT is a int, not a function", ("uses",))]


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(tmp_path, monkeypatch, workdir):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    module = workdir / "unwritable_steps.py"
    module.write_text("def fit(alpha):\n    return alpha\n")
    assert _fresh(module).bindings["fit"].parameters[0][0] == "alpha"
    assert blocker.read_text() == "a file where the cache folder would go"
