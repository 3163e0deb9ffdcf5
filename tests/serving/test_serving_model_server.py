"""V2 conformance of the model server: every endpoint and every error case, over real HTTP."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest

from fanflow.serving import wire
from fanflow.serving.model_server import create_model_app
from fanflow.stores.artifacts import ArtifactStore
from tests.serving.serving_helpers import wait_ready
from tests.serving.serving_predictors import BrightnessTagger, clips_with, load_tagger


@pytest.fixture
def server(serve):
    return serve(create_model_app(BrightnessTagger(), "bright"))


def infer(server, body, name="bright", **kwargs) -> httpx.Response:
    if isinstance(body, dict):
        body = json.dumps(body)
    return httpx.post(f"{server.url}/v2/models/{name}/infer", content=body, **kwargs)


def request_for(clips, request_id=None) -> dict:
    return wire.infer_request(clips, request_id)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert "detail" not in body  # never a framework's error shape
    for word in words:
        assert word in body["error"], body["error"]


def test_health_endpoints(server):
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(server.url + "/v2/models/bright/ready").json() == {"name": "bright", "ready": True}
    server_metadata = httpx.get(server.url + "/v2").json()
    assert server_metadata["name"] == "fanflow" and isinstance(server_metadata["extensions"], list)


def test_model_metadata_describes_inputs_and_outputs(server):
    metadata = httpx.get(server.url + "/v2/models/bright").json()
    assert metadata["name"] == "bright"
    assert metadata["platform"]
    assert "versions" not in metadata  # a predictor given as an object has no file hash
    assert metadata["inputs"] == [{"name": "clips", "datatype": "FP32", "shape": [-1, 4, 8, 8]}]
    assert metadata["outputs"] == [
        {"name": "tags", "datatype": "BYTES", "shape": [-1]},
        {"name": "scores", "datatype": "FP32", "shape": [-1, 4]},
    ]
    assert json.loads(metadata["parameters"]["vocabulary"]) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert metadata["parameters"]["threshold"] == 0.5


def test_infer_tags_a_batch_and_echoes_the_id(server):
    clips = np.concatenate([clips_with({"r0c0": 0.9, "r1c1": 0.6}), clips_with({"r0c1": 0.3})])
    response = infer(server, request_for(clips, "request-17"))
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "bright"
    assert body["id"] == "request-17"
    assert "model_version" not in body and "parameters" not in body  # optional fields omitted
    tags, scores = body["outputs"]
    assert tags == {"name": "tags", "datatype": "BYTES", "shape": [2], "data": ['["r0c0","r1c1"]', "[]"]}
    assert scores["name"] == "scores" and scores["datatype"] == "FP32" and scores["shape"] == [2, 4]
    np.testing.assert_allclose(scores["data"], [0.9, 0, 0, 0.6, 0, 0.3, 0, 0], atol=1e-6)
    assert json.loads(scores["parameters"]["vocabulary"]) == ["r0c0", "r0c1", "r1c0", "r1c1"]


def test_infer_without_id_answers_without_id(server):
    body = infer(server, request_for(clips_with({}))).json()
    assert "id" not in body


def test_nested_data_is_read_like_flat_data(server):
    clips = clips_with({"r0c1": 0.8})
    request = request_for(clips)
    request["inputs"][0]["data"] = clips.tolist()
    tags = infer(server, request).json()["outputs"][0]["data"]
    assert tags == ['["r0c1"]']


def test_requested_outputs_only(server):
    request = {**request_for(clips_with({"r0c0": 1.0})), "outputs": [{"name": "scores"}]}
    outputs = infer(server, request).json()["outputs"]
    assert [o["name"] for o in outputs] == ["scores"]
    request["outputs"] = [{"name": "logits"}]
    assert_error(infer(server, request), 400, "logits")


def test_unknown_model_is_404(server):
    assert_error(httpx.get(server.url + "/v2/models/other"), 404, "other")
    assert_error(httpx.get(server.url + "/v2/models/other/ready"), 404, "other")
    assert_error(infer(server, request_for(clips_with({})), name="other"), 404, "other")


def test_unknown_path_and_method_have_the_protocol_error_shape(server):
    assert_error(httpx.get(server.url + "/v2/nothing/here"), 404)
    response = httpx.get(server.url + "/v2/models/bright/infer")
    assert_error(response, 405)
    assert response.headers["allow"] == "POST"
    response = httpx.post(server.url + "/v2/health/live")
    assert_error(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_no_redirect_is_built_from_the_host_header(server):
    response = httpx.get(server.url + "/v2/", headers={"host": "attacker.example"})
    assert response.status_code == 200 and "location" not in response.headers
    assert response.json()["name"] == "fanflow"
    response = httpx.get(server.url + "/v2/health/live/", headers={"host": "attacker.example"})
    assert_error(response, 404)
    assert "location" not in response.headers


def test_each_answer_carries_a_request_id(server):
    given = httpx.get(server.url + "/v2/health/live", headers={"x-request-id": "probe-7"})
    assert given.headers["x-request-id"] == "probe-7"
    made = httpx.get(server.url + "/v2/health/live", headers={"x-request-id": "not an id!"})
    assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != given.headers["x-request-id"]


class FailingTagger(BrightnessTagger):
    def predict_proba(self, X):
        raise OSError("disk /secret/path is gone")


def test_an_internal_error_is_logged_not_shown(serve, caplog):
    server = serve(create_model_app(FailingTagger(), "bright"))
    with caplog.at_level("ERROR"):
        response = infer(server, request_for(clips_with({})))
    assert_error(response, 500, response.headers["x-request-id"])
    assert "secret" not in response.text and "OSError" not in response.text
    logged = [r for r in caplog.records if response.headers["x-request-id"] in r.getMessage()]
    assert logged and "secret" in str(logged[0].exc_info[1])


def test_versions_path(serve, tmp_path):
    path = BrightnessTagger().save(tmp_path / "tagger.json")
    server = serve(create_model_app(path, "bright", loader=load_tagger))
    wait_ready(server.url)
    version = httpx.get(server.url + "/v2/models/bright").json()["versions"][0]
    assert len(version) == 12
    ok = infer(server, request_for(clips_with({})), name=f"bright/versions/{version}")
    assert ok.status_code == 200 and ok.json()["model_version"] == version
    assert_error(httpx.get(f"{server.url}/v2/models/bright/versions/nope"), 404, "nope")


BAD_REQUESTS = {
    "wrong shape": lambda r: r["inputs"][0].update(shape=[1, 4, 8, 9]),
    "too few dimensions": lambda r: r["inputs"][0].update(shape=[4, 8, 8]),
    "data length": lambda r: r["inputs"][0].update(data=r["inputs"][0]["data"][:-1]),
    "wrong datatype": lambda r: r["inputs"][0].update(datatype="INT32"),
    "unknown datatype": lambda r: r["inputs"][0].update(datatype="FLOAT"),
    "strings as data": lambda r: r["inputs"][0].update(data=["a"] * 256),
    "booleans as data": lambda r: r["inputs"][0].update(data=[True] * 256),
    "null in data": lambda r: r["inputs"][0].update(data=[None] * 256),
    "ragged nested data": lambda r: r["inputs"][0].update(data=[[0.0], [0.0, 1.0]]),
    "out of range values": lambda r: r["inputs"][0].update(data=[255.0] * 256),
    "empty batch": lambda r: r["inputs"][0].update(shape=[0, 4, 8, 8], data=[]),
    "wrong input name": lambda r: r["inputs"][0].update(name="frames"),
    "two inputs": lambda r: r["inputs"].append(dict(r["inputs"][0])),
    "no inputs": lambda r: r.update(inputs=[]),
    "inputs not a list": lambda r: r.update(inputs={"name": "clips"}),
    "missing data": lambda r: r["inputs"][0].pop("data"),
    "shape of strings": lambda r: r["inputs"][0].update(shape=["1", 4, 8, 8]),
    "negative shape": lambda r: r["inputs"][0].update(shape=[-1, 4, 8, 8]),
    "id not a string": lambda r: r.update(id=17),
    "parameters not an object": lambda r: r.update(parameters=[1]),
    "outputs not a list": lambda r: r.update(outputs="tags"),
    "datatype an object": lambda r: r["inputs"][0].update(datatype={"FP32": 1}),
    "datatype a list": lambda r: r["inputs"][0].update(datatype=["FP32"]),
    "one boolean among numbers": lambda r: r["inputs"][0]["data"].__setitem__(3, True),
    "nested parameters": lambda r: r.update(parameters={"a": {"b": 1}}),
    "nested input parameters": lambda r: r["inputs"][0].update(parameters={"a": [1]}),
    "duplicate outputs": lambda r: r.update(outputs=[{"name": "tags"}, {"name": "tags"}]),
    "id too long": lambda r: r.update(id="x" * 1_000_000),
    "nested data too deep": lambda r: r["inputs"][0].update(data=[[v] for v in r["inputs"][0]["data"]]),
    "binary_data_output not a boolean": lambda r: r.update(parameters={"binary_data_output": "yes"}),
    "data and binary size": lambda r: r["inputs"][0].update(parameters={"binary_data_size": 0}),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_schema_invalid_requests_are_400_and_the_server_stays_healthy(server, case):
    request = request_for(clips_with({"r0c0": 1.0}))
    BAD_REQUESTS[case](request)
    assert_error(infer(server, request), 400)
    good = infer(server, request_for(clips_with({"r0c0": 1.0})))
    assert good.status_code == 200 and good.json()["outputs"][0]["data"] == ['["r0c0"]']


@pytest.mark.parametrize(
    "body, words",
    [
        (b"", ["empty"]),
        (b"   ", ["empty"]),
        (b"{not json", ["JSON"]),
        (b"\xff\xfe\x00", ["JSON"]),
        (b"[1, 2, 3]", ["object"]),
        (b"null", ["object"]),
        (b"{}", ["inputs"]),
        (b"[" * 100_000 + b"]" * 100_000, ["JSON"]),
        (b'{"inputs": [{"name": "clips", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": [NaN]}]}', []),
        ('{"inputs": []}'.encode("utf-16"), ["UTF-8", "Inference-Header-Content-Length"]),
    ],
    ids=["empty", "blank", "not json", "not utf-8", "a list", "null", "no inputs", "deep nesting", "nan", "utf-16"],
)
def test_bodies_that_are_not_requests_are_400(server, body, words):
    assert_error(infer(server, body), 400, *words)
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_huge_body_is_413_and_the_server_stays_healthy(serve):
    server = serve(create_model_app(BrightnessTagger(), "bright", max_body_bytes=100_000))
    clips = np.random.default_rng(0).random((512, 4, 8, 8), dtype=np.float32)
    huge = json.dumps(request_for(clips))
    assert len(huge) > 1_000_000
    assert_error(infer(server, huge), 413, "limit")

    def chunks():  # no Content-Length: the limit is enforced while reading
        for start in range(0, len(huge), 16_384):
            yield huge[start : start + 16_384].encode()

    assert_error(infer(server, chunks()), 413, "limit")
    assert httpx.get(server.url + "/v2/health/live").status_code == 200
    assert infer(server, request_for(clips_with({}))).status_code == 200


def test_503_while_the_model_loads(serve, tmp_path):
    path = BrightnessTagger().save(tmp_path / "tagger.json")
    release = threading.Event()

    def slow_loader(p):
        release.wait(10)
        return load_tagger(p)

    server = serve(create_model_app(path, "bright", loader=slow_loader))
    try:
        assert_error(httpx.get(server.url + "/v2/health/ready"), 503, "loading")
        assert httpx.get(server.url + "/v2/health/ready").json()["ready"] is False
        assert_error(httpx.get(server.url + "/v2/models/bright/ready"), 503, "loading")
        assert_error(infer(server, request_for(clips_with({}))), 503, "not ready")
        assert_error(httpx.get(server.url + "/v2/models/bright"), 503)
        assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    finally:
        release.set()
    wait_ready(server.url)
    assert infer(server, request_for(clips_with({}))).status_code == 200


def test_loads_a_selected_candidate_from_the_artifact_store_by_hash(serve, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    stored = store.put_file(BrightnessTagger(gain=2.0).save(tmp_path / "m.json"), suffix=".json")
    candidate = {"name": "cnn", "model": store.path(stored.digest, ".json"), "accuracy": 0.93}
    server = serve(create_model_app(candidate, loader=load_tagger))
    wait_ready(server.url)
    metadata = httpx.get(server.url + "/v2/models/cnn").json()
    assert metadata["versions"] == [stored.hex[:12]]
    tags = infer(server, request_for(clips_with({"r1c0": 0.3})), name="cnn").json()["outputs"][0]["data"]
    assert tags == ['["r1c0"]']  # gain 2: the stored model, not a default one


def test_a_tampered_artifact_is_never_loaded(serve, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    stored = store.put_file(BrightnessTagger().save(tmp_path / "m.json"), suffix=".json")
    path = store.path(stored.digest, ".json")
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"gain": 1.0', '"gain": 9.0'))
    loaded = []
    server = serve(create_model_app({"name": "cnn", "model": path}, loader=lambda p: loaded.append(p)))
    deadline = time.monotonic() + 5
    while "failed" not in httpx.get(server.url + "/v2/health/ready").text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert_error(httpx.get(server.url + "/v2/health/ready"), 503, "IntegrityError")
    assert loaded == []  # the loader never saw the file


def test_metrics_count_requests_and_time_them(server):
    infer(server, request_for(clips_with({})))
    infer(server, b"{")
    text = httpx.get(server.url + "/metrics").text
    assert (
        'fanflow_http_requests_total{endpoint="/v2/models/{name}/infer",method="POST",status="200"} 1.0'
        in text
    )
    assert (
        'fanflow_http_requests_total{endpoint="/v2/models/{name}/infer",method="POST",status="400"} 1.0'
        in text
    )
    assert 'fanflow_http_request_duration_seconds_count{endpoint="/v2/models/{name}/infer"} 2.0' in text
    assert "fanflow_inference_clips_total 1.0" in text


def test_a_client_that_hangs_up_is_counted_apart_and_its_queued_work_is_dropped(serve):
    server = serve(create_model_app(BrightnessTagger(delay=0.6), "bright"))
    busy = threading.Thread(target=infer, args=(server, request_for(clips_with({}, n=1))))
    busy.start()  # holds the one inference thread for 0.6 s
    time.sleep(0.1)
    with pytest.raises(httpx.ReadTimeout):  # hangs up while its request waits for that thread
        infer(server, request_for(clips_with({}, n=5)), timeout=0.2)
    busy.join()
    time.sleep(0.3)
    text = httpx.get(server.url + "/metrics").text
    assert "fanflow_inference_clips_total 1.0" in text  # the 5 clips were never tagged
    assert 'fanflow_http_disconnects_total{endpoint="/v2/models/{name}/infer"} 1.0' in text
    assert 'status="500"' not in text


def test_under_plain_uvicorn_a_client_that_hangs_up_is_counted_apart_too():
    """The app served by uvicorn's own protocol (as a user may run it), which tells the app of a
    hang-up only through ``receive``: the same outcome as under fanflow's own server."""
    import asyncio
    import socket

    import uvicorn

    app = create_model_app(BrightnessTagger(delay=0.6), "bright")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", lifespan="on", log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        wait_ready(url)
        busy = threading.Thread(target=httpx.post, args=(url + "/v2/models/bright/infer",),
                                kwargs={"json": request_for(clips_with({}, n=1)), "timeout": 10})
        busy.start()  # holds the one inference thread for 0.6 s
        time.sleep(0.1)
        with pytest.raises(httpx.ReadTimeout):  # hangs up while its request waits for that thread
            httpx.post(url + "/v2/models/bright/infer", json=request_for(clips_with({}, n=5)), timeout=0.2)
        busy.join()
        time.sleep(0.3)
        text = httpx.get(url + "/metrics").text
        assert "fanflow_inference_clips_total 1.0" in text  # the 5 clips were never tagged
        assert 'fanflow_http_disconnects_total{endpoint="/v2/models/{name}/infer"} 1.0' in text
        assert 'status="500"' not in text
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_body_cut_off_midway_is_a_disconnect_not_an_error(server, caplog):
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v2/models/bright/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(0.1)
    time.sleep(0.2)
    text = httpx.get(server.url + "/metrics").text
    assert 'fanflow_http_disconnects_total{endpoint="/v2/models/{name}/infer"} 1.0' in text
    assert 'status="500"' not in text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_grid_candidate_is_served_under_a_safe_name_beside_its_full_name(serve, tmp_path):
    full = "cnn_batchnorm[max_epochs=24,patience=24]"
    candidate = {"name": full, "model": BrightnessTagger().save(tmp_path / "m.json")}
    server = serve(create_model_app(candidate, loader=load_tagger))
    wait_ready(server.url)
    ((entry),) = httpx.post(server.url + "/v2/repository/index").json()
    name = entry["name"]
    assert name.startswith("cnn_batchnorm_max_epochs_24_patience_24-")
    metadata = httpx.get(f"{server.url}/v2/models/{name}").json()
    assert metadata["parameters"]["candidate"] == full
    assert infer(server, request_for(clips_with({})), name=name).status_code == 200
    other = {"name": "cnn_batchnorm[max_epochs=24,patience=25]", "model": candidate["model"]}
    assert create_model_app(other, loader=load_tagger).state.served.name != name


def test_repository_index_names_the_model(server):
    assert httpx.post(server.url + "/v2/repository/index").json() == [{"name": "bright", "state": "READY"}]


def test_binds_loopback_only(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert server.sock.getsockname()[0] == "127.0.0.1"
