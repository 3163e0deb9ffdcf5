"""The ensemble gateway over real model servers: each strategy, provenance, degraded answers,
quorum, deadlines and the protocol's errors."""

from __future__ import annotations

import json
import logging
import time

import httpx
import numpy as np
import pytest

from fanflow.serving import wire
from fanflow.serving.gateway import create_gateway_app
from fanflow.serving.model_server import create_model_app
from tests.serving.serving_predictors import BrightnessTagger, clips_with

# One clip whose regions r0c0, r0c1, r1c0 have brightness 0.9, 0.4, 0.2. With threshold 0.5:
#   a (gain 1.0): scores .9  .4  .2 -> emits r0c0
#   b (gain 1.5): scores 1.0 .6  .3 -> emits r0c0, r0c1
#   c (gain 0.5): scores .45 .2  .1 -> emits nothing
CLIP = {"r0c0": 0.9, "r0c1": 0.4, "r1c0": 0.2}
GAINS = {"a": 1.0, "b": 1.5, "c": 0.5}


@pytest.fixture
def members(serve):
    """name -> running model server (a, b, c as above)."""
    return {name: serve(create_model_app(BrightnessTagger(gain=gain), name)) for name, gain in GAINS.items()}


def endpoints(members, names="abc") -> list[dict]:
    return [{"url": members[n].url, "model": n} for n in names]


def ask(gateway, clips=None, request_id=None, **extra) -> httpx.Response:
    request = wire.infer_request(clips_with(CLIP) if clips is None else clips, request_id) | extra
    return httpx.post(gateway.url + "/v2/models/ensemble/infer", json=request, timeout=10)


def outputs(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def clip_tags(response: httpx.Response) -> list[list[str]]:
    return [json.loads(t) for t in outputs(response)["tags"]["data"]]


def provenance(response: httpx.Response) -> list[list[dict]]:
    return [json.loads(p) for p in outputs(response)["provenance"]["data"]]


@pytest.mark.parametrize(
    "names, strategy, options, expected",
    [
        ("abc", "union", {}, ["r0c0", "r0c1"]),
        ("ab", "intersection", {}, ["r0c0"]),
        ("abc", "intersection", {}, []),
        ("abc", "majority", {}, ["r0c0"]),
        ("abc", "mean", {}, ["r0c0"]),  # means .783 .4 .2
        ("abc", "mean", {"threshold": 0.35}, ["r0c0", "r0c1"]),
        ("abc", "weighted", {"weights": {"b": 5.0}}, ["r0c0", "r0c1"]),  # r0c1: (.4 + 5×.6 + .2) / 7
        ("abc", "weighted", {"weights": {"c": 5.0}}, ["r0c0"]),  # r0c1: (.4 + .6 + 5×.2) / 7
    ],
)
def test_strategies(serve, members, names, strategy, options, expected):
    gateway = serve(create_gateway_app(endpoints(members, names), strategy, **options))
    response = ask(gateway)
    assert clip_tags(response) == [expected]
    parameters = response.json()["parameters"]
    assert parameters["strategy"] == strategy and parameters["degraded"] is False


def test_every_tag_carries_its_provenance(serve, members):
    gateway = serve(create_gateway_app(endpoints(members), "union"))
    (clip,) = provenance(ask(gateway))
    by_tag = {p["tag"]: p for p in clip}
    assert set(by_tag) == {"r0c0", "r0c1"}
    assert by_tag["r0c0"]["found_by"] == ["a", "b"]
    assert by_tag["r0c1"]["found_by"] == ["b"]
    assert by_tag["r0c1"]["scores"] == pytest.approx({"a": 0.4, "b": 0.6, "c": 0.2})
    assert by_tag["r0c1"]["score"] == pytest.approx(0.6)  # union: the highest member score


def test_scores_output_holds_the_combined_score_per_tag(serve, members):
    gateway = serve(create_gateway_app(endpoints(members), "mean"))
    scores = outputs(ask(gateway))["scores"]
    assert json.loads(scores["parameters"]["vocabulary"]) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert scores["parameters"]["threshold"] == 0.5
    np.testing.assert_allclose(scores["data"], [(0.9 + 1.0 + 0.45) / 3, 0.4, 0.2, 0.0], atol=1e-5)


def test_a_batch_gets_one_answer_per_clip_and_the_id_back(serve, members):
    gateway = serve(create_gateway_app(endpoints(members), "union"))
    clips = np.concatenate([clips_with(CLIP), clips_with({}), clips_with({"r1c1": 1.0})])
    response = ask(gateway, clips, request_id="batch-3")
    assert response.json()["id"] == "batch-3"
    assert response.json()["model_name"] == "ensemble"
    assert clip_tags(response) == [["r0c0", "r0c1"], [], ["r1c1"]]


def test_members_with_different_vocabularies(serve):
    a = serve(create_model_app(BrightnessTagger(), "a"))
    b = serve(create_model_app(BrightnessTagger(grid=(1, 2), tags=["left", "right"]), "b"))
    gateway = serve(create_gateway_app([{"url": a.url, "model": "a"}, {"url": b.url, "model": "b"}]))
    response = ask(gateway, clips_with({"r0c0": 1.0, "r1c0": 1.0}))
    assert clip_tags(response) == [["r0c0", "r1c0", "left"]]
    vocabulary = json.loads(outputs(response)["scores"]["parameters"]["vocabulary"])
    assert vocabulary == ["r0c0", "r0c1", "r1c0", "r1c1", "left", "right"]
    metadata = httpx.get(gateway.url + "/v2/models/ensemble").json()
    assert json.loads(metadata["parameters"]["vocabulary"]) == vocabulary


def test_a_failed_member_degrades_the_answer_and_is_named(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab"), "union"))
    members["b"].stop()
    response = ask(gateway)
    assert clip_tags(response) == [["r0c0"]]  # a's tags only
    parameters = response.json()["parameters"]
    assert parameters["degraded"] is True
    failed = json.loads(parameters["failed_members"])
    assert failed == {"b": "unreachable"}  # no address, port or system error
    assert provenance(response)[0][0]["found_by"] == ["a"]
    assert members["b"].url.split(":")[-1] not in response.text


def test_a_slow_member_is_cut_off_at_its_deadline(serve):
    fast = serve(create_model_app(BrightnessTagger(), "fast"))
    slow = serve(create_model_app(BrightnessTagger(delay=1.0), "slow"))
    members = [{"url": fast.url, "model": "fast"}, {"url": slow.url, "model": "slow"}]
    gateway = serve(create_gateway_app(members, member_timeout=0.3))
    response = ask(gateway)
    assert response.elapsed.total_seconds() < 1.5
    failed = json.loads(response.json()["parameters"]["failed_members"])
    assert failed == {"slow": "no answer within 0.3 s"}
    assert clip_tags(response) == [["r0c0"]]


def test_members_are_called_at_once_not_one_after_the_other(serve):
    names = ("s1", "s2", "s3")
    slow = {name: serve(create_model_app(BrightnessTagger(delay=0.4), name)) for name in names}
    gateway = serve(create_gateway_app([{"url": server.url, "model": name} for name, server in slow.items()]))
    ask(gateway)  # connections opened
    response = ask(gateway)
    assert response.json()["parameters"]["degraded"] is False
    assert 0.4 <= response.elapsed.total_seconds() < 0.8  # one after the other would take 1.2 s


def test_no_member_answering_is_503_with_every_error(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab")))
    members["a"].stop()
    members["b"].stop()
    response = ask(gateway)
    assert response.status_code == 503
    body = response.json()
    assert "a:" in body["error"] and "b:" in body["error"]
    assert body["member_errors"] == {"a": "unreachable", "b": "unreachable"}
    assert "127.0.0.1" not in response.text and "Errno" not in response.text
    assert httpx.get(gateway.url + "/v2/health/ready").status_code == 503
    assert httpx.get(gateway.url + "/v2/health/live").status_code == 200


def test_quorum(serve, members):
    gateway = serve(create_gateway_app(endpoints(members), "union", quorum=2))
    assert ask(gateway).json()["parameters"]["degraded"] is False
    members["c"].stop()
    assert ask(gateway).json()["parameters"]["degraded"] is True  # 2 of 3: enough
    assert httpx.get(gateway.url + "/v2/health/ready").status_code == 200
    members["b"].stop()
    response = ask(gateway)
    assert response.status_code == 503
    assert "quorum of 2" in response.json()["error"]
    assert set(response.json()["member_errors"]) == {"b", "c"}
    assert httpx.get(gateway.url + "/v2/health/ready").status_code == 503


def test_a_request_every_member_refuses_is_the_clients_error(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab")))
    request = wire.infer_request(clips_with(CLIP))
    request["inputs"][0]["shape"] = [1, 4, 8, 9]
    response = httpx.post(gateway.url + "/v2/models/ensemble/infer", json=request)
    assert response.status_code == 400
    assert "shape" in response.json()["error"]
    for body in (b"", b"{not json"):
        response = httpx.post(gateway.url + "/v2/models/ensemble/infer", content=body)
        assert response.status_code == 400 and response.json()["error"]
    assert ask(gateway).status_code == 200


def test_requested_outputs(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab")))
    response = ask(gateway, outputs=[{"name": "provenance"}, {"name": "tags"}])
    assert [o["name"] for o in response.json()["outputs"]] == ["provenance", "tags"]
    response = ask(gateway, outputs=[{"name": "logits"}])
    assert response.status_code == 400 and "logits" in response.json()["error"]


def test_outputs_named_with_an_escaped_key_are_read_as_outputs(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab")))
    request = json.dumps(wire.infer_request(clips_with(CLIP)))[:-1] + ', "\\u006futputs": [{"name": "tags"}]}'
    response = httpx.post(gateway.url + "/v2/models/ensemble/infer", content=request)
    assert [o["name"] for o in response.json()["outputs"]] == ["tags"]
    assert response.json()["parameters"]["degraded"] is False


def test_a_bad_datatype_is_the_clients_error_not_an_outage(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab")))
    request = wire.infer_request(clips_with(CLIP))
    request["inputs"][0]["datatype"] = {"FP32": True}
    response = httpx.post(gateway.url + "/v2/models/ensemble/infer", json=request)
    assert response.status_code == 400 and "datatype" in response.json()["error"]
    text = httpx.get(gateway.url + "/metrics").text
    assert "fanflow_member_requests_total{" not in text  # refused before any member was asked


def test_tensors_too_large_for_the_members_are_refused_up_front(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab"), member_max_body_bytes=10_000))
    response = ask(gateway, clips_with({}, n=20))  # 20 x 1 KiB of float32
    assert response.status_code == 413 and "members' limit" in response.json()["error"]
    assert ask(gateway, clips_with({}, n=2)).status_code == 200


def test_the_member_deadline_grows_with_the_bytes_carried(members):
    app = create_gateway_app(endpoints(members, "ab"), member_timeout=5.0, member_seconds_per_mib=0.5)
    gateway = app.state.served
    assert gateway.deadline(0) == 5.0
    assert gateway.deadline(32 * 2**20) == 5.0 + 16.0


def test_a_client_that_hangs_up_cancels_the_members_queued_work(serve):
    slow = {name: serve(create_model_app(BrightnessTagger(delay=0.6), name)) for name in ("s1", "s2")}
    gateway = serve(create_gateway_app([{"url": server.url, "model": name} for name, server in slow.items()]))
    import threading
    import time

    busy = threading.Thread(target=ask, args=(gateway,))
    busy.start()  # both members busy for 0.6 s
    time.sleep(0.15)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.url + "/v2/models/ensemble/infer",
            json=wire.infer_request(clips_with(CLIP, n=5)),
            timeout=0.2,
        )
    busy.join()
    time.sleep(0.4)
    for server in slow.values():
        text = httpx.get(server.url + "/metrics").text
        assert "fanflow_inference_clips_total 1.0" in text  # the 5 clips were dropped, not tagged
        assert 'fanflow_http_disconnects_total{endpoint="/v2/models/{name}/infer"} 1.0' in text
    text = httpx.get(gateway.url + "/metrics").text
    assert 'fanflow_http_disconnects_total{endpoint="/v2/models/{name}/infer"} 1.0' in text


def test_gateway_endpoints(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab"), "mean", threshold=0.4, quorum=2))
    assert httpx.get(gateway.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(gateway.url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(gateway.url + "/v2/models/ensemble/ready").json() == {"name": "ensemble", "ready": True}
    metadata = httpx.get(gateway.url + "/v2/models/ensemble").json()
    assert metadata["name"] == "ensemble"
    assert metadata["inputs"] == [{"name": "clips", "datatype": "FP32", "shape": [-1, 4, 8, 8]}]
    assert [o["name"] for o in metadata["outputs"]] == ["tags", "scores", "provenance"]
    assert metadata["parameters"]["strategy"] == "mean" and metadata["parameters"]["quorum"] == 2
    response = httpx.get(gateway.url + "/v2/models/a")
    assert response.status_code == 404 and "ensemble" in response.json()["error"]
    ask(gateway)
    text = httpx.get(gateway.url + "/metrics").text
    assert 'fanflow_member_requests_total{member="a",outcome="ok"} 1.0' in text
    assert 'fanflow_ensemble_answers_total{result="complete"} 1.0' in text


def test_gateway_refuses_a_huge_body_itself(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab"), max_body_bytes=10_000))
    response = httpx.post(gateway.url + "/v2/models/ensemble/infer", content=b"x" * 20_000)
    assert response.status_code == 413 and response.json()["error"]
    text = httpx.get(gateway.url + "/metrics").text
    assert "fanflow_member_requests_total{" not in text  # the members were never asked


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"strategy": "vote"}, "unknown strategy"),
        ({"quorum": 3}, "quorum"),
        ({"quorum": 0}, "quorum"),
        ({"weights": {"z": 1.0}}, "not in the ensemble"),
        ({"weights": {"a": -1.0}}, "positive"),
        ({"member_timeout": 0}, "member_timeout"),
    ],
)
def test_bad_gateway_settings_are_refused(members, kwargs, words):
    with pytest.raises(ValueError, match=words):
        create_gateway_app(endpoints(members, "ab"), **kwargs)


def test_members_need_distinct_names(members):
    with pytest.raises(ValueError, match="distinct"):
        create_gateway_app([{"url": members["a"].url, "model": "a"}, {"url": members["b"].url, "model": "a"}])


def test_readiness_and_metadata_answers_are_not_taken_for_broken_inference_answers(serve, members, caplog):
    gateway = serve(create_gateway_app(endpoints(members), "union"))
    with caplog.at_level(logging.WARNING):
        assert httpx.get(gateway.url + "/v2/health/ready").status_code == 200
        assert httpx.get(gateway.url + "/v2/models/ensemble").status_code == 200
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_member_restarted_on_its_port_is_asked_again_on_new_connections(serve, members):
    gateway = serve(create_gateway_app(endpoints(members, "ab"), "union"))
    assert response_ok(ask(gateway))  # the gateway now keeps connections open to a and b
    port = members["b"].port
    members["b"].stop()
    serve_on(serve, members, "b", port)
    # The old connections were closed by the stopped server: none of them is used again.
    for _ in range(3):
        parameters = ask(gateway).json()["parameters"]
        assert parameters["degraded"] is False, parameters


def test_a_failing_member_is_logged_when_it_fails_and_recovers_not_per_request(serve, members, caplog):
    gateway = serve(create_gateway_app(endpoints(members, "ab"), "union"))
    port = members["b"].port
    members["b"].stop()
    with caplog.at_level(logging.WARNING, logger="fanflow.serving.gateway"):
        for _ in range(20):
            assert ask(gateway).json()["parameters"]["degraded"] is True
        serve_on(serve, members, "b", port)
        assert ask(gateway).json()["parameters"]["degraded"] is False
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("member b at http://127.0.0.1:") and "unreachable" in messages[0]
    assert messages[1] == "member b answers again, after 20 failed call(s)"


def response_ok(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.json()["parameters"]["degraded"] is False


def serve_on(serve, members, name: str, port: int) -> None:
    """Start member ``name`` again on ``port`` (the port may linger a moment after a stop)."""
    for _ in range(50):
        try:
            members[name] = serve(create_model_app(BrightnessTagger(gain=GAINS[name]), name), port=port)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} did not come free")


def test_a_body_of_several_mib_is_relayed_in_slices_and_answered_whole(serve, members):
    """3,000 clips: 3 MiB of binary tensor data for each member, sent in 1 MiB slices."""
    gateway = serve(create_gateway_app(endpoints(members, "ab"), "union"))
    clips = np.repeat(clips_with(CLIP), 3000, axis=0)
    response = ask(gateway, clips)
    assert response.json()["parameters"]["degraded"] is False
    assert clip_tags(response) == [["r0c0", "r0c1"]] * 3000
