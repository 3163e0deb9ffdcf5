"""``fanflow predict`` (fanflow.cli.predict) against real servers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fanflow.cli.predict import tag_files
from fanflow.serving.gateway import create_gateway_app
from fanflow.serving.model_server import create_model_app
from fanflow.serving.server import bind_socket
from tests.serving.serving_predictors import BrightnessTagger, clips_with


@pytest.fixture
def ensemble(serve):
    a = serve(create_model_app(BrightnessTagger(gain=1.0), "a"))
    b = serve(create_model_app(BrightnessTagger(gain=1.5), "b"))
    gateway = serve(create_gateway_app([{"url": a.url, "model": "a"}, {"url": b.url, "model": "b"}]))
    return {"a": a, "b": b, "gateway": gateway}


@pytest.fixture
def clip_files(tmp_path):
    one = tmp_path / "one.npy"
    np.save(one, clips_with({"r0c0": 0.9, "r0c1": 0.4})[0])
    two = tmp_path / "two.npy"  # two clips in one file, as uint8
    np.save(two, (np.concatenate([clips_with({}), clips_with({"r1c1": 1.0})]) * 255).astype(np.uint8))
    return [one, two]


def test_json_output_has_tags_and_provenance(ensemble, clip_files, capsys):
    assert tag_files(ensemble["gateway"].url, clip_files, as_json=True) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "ensemble" and result["degraded"] is False
    assert [c["clip"] for c in result["clips"]] == [
        str(clip_files[0]),
        f"{clip_files[1]}[0]",
        f"{clip_files[1]}[1]",
    ]
    assert [c["tags"] for c in result["clips"]] == [["r0c0", "r0c1"], [], ["r1c1"]]
    r0c1 = result["clips"][0]["provenance"][1]
    assert r0c1["tag"] == "r0c1" and r0c1["found_by"] == ["b"]
    assert r0c1["scores"] == pytest.approx({"a": 0.4, "b": 0.6})


def test_table_output(ensemble, clip_files, capsys):
    assert tag_files(ensemble["gateway"].url + "/v2/models/ensemble", clip_files[:1], as_json=False) == 0
    out = capsys.readouterr().out
    assert "Tags from ensemble" in out
    assert "r0c0, r0c1" in out
    assert "r0c1: b 0.60" in out and "r0c0: a 0.90, b 1.00" in out


def test_a_model_server_directly(ensemble, clip_files, capsys):
    assert tag_files(ensemble["a"].url, clip_files[:1], as_json=True) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "a"
    assert result["clips"][0]["provenance"] == [
        {"tag": "r0c0", "score": pytest.approx(0.9), "found_by": ["a"]}
    ]


def test_degraded_answers_name_the_failed_member(ensemble, clip_files, capsys):
    ensemble["b"].stop()
    assert tag_files(ensemble["gateway"].url, clip_files[:1], as_json=False) == 0
    out = capsys.readouterr().out
    assert "degraded" in out and "member b" in out


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_an_unreachable_url_is_one_line(clip_files, capsys):
    sock = bind_socket("127.0.0.1", 0)  # a port nobody listens on
    port = sock.getsockname()[1]
    sock.close()
    assert tag_files(f"http://127.0.0.1:{port}", clip_files, as_json=False) == 1
    assert "cannot reach" in one_error_line(capsys)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.npy", "no such file"),
        (lambda d: (d / "junk.npy").write_bytes(b"not numpy") and d / "junk.npy", "junk.npy"),
        (lambda d: np.save(d / "shape.npy", np.zeros((4, 9, 9))) or d / "shape.npy", "shape.npy"),
        (lambda d: (d / "broken.gif").write_bytes(b"GIF89a broken") and d / "broken.gif", "broken.gif"),
    ],
    ids=["missing", "not numpy", "wrong shape", "broken video"],
)
def test_a_bad_file_is_one_line(ensemble, tmp_path, capsys, make, words):
    assert tag_files(ensemble["gateway"].url, [make(tmp_path)], as_json=True) == 1
    assert words in one_error_line(capsys)


def test_values_the_server_refuses_are_one_line(ensemble, tmp_path, capsys):
    np.save(tmp_path / "bright.npy", np.full((4, 8, 8), 7.0, dtype=np.float32))
    assert tag_files(ensemble["a"].url, [tmp_path / "bright.npy"], as_json=True) == 1
    assert "400" in one_error_line(capsys)


def test_not_a_url(capsys):
    assert tag_files("localhost:8000", [], as_json=False) == 1
    assert "URL" in one_error_line(capsys)
