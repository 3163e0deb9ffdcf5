"""The servers driven by clients we did not write: tritonclient's HTTP client and KServe's
InferenceRESTClient, with tensors as JSON and as binary data (both clients' default), on a
model server and on the ensemble gateway: every endpoint they call, and the errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from fanflow.serving.gateway import create_gateway_app
from fanflow.serving.model_server import create_model_app
from tests.serving.serving_predictors import BrightnessTagger, clips_with

CLIPS = np.concatenate([clips_with({"r0c0": 0.9, "r1c1": 0.6}), clips_with({"r0c1": 0.3})])
EXPECTED_TAGS = [["r0c0", "r1c1"], []]


@pytest.fixture(params=["model server", "gateway"])
def target(request, serve):
    """(url, model name) of a model server, or of a gateway over two model servers."""
    if request.param == "model server":
        return serve(create_model_app(BrightnessTagger(), "bright", max_body_bytes=200_000)).url, "bright"
    a = serve(create_model_app(BrightnessTagger(), "a"))
    b = serve(create_model_app(BrightnessTagger(gain=0.5), "b"))
    members = [{"url": a.url, "model": "a"}, {"url": b.url, "model": "b"}]
    return serve(create_gateway_app(members, max_body_bytes=200_000)).url, "ensemble"


def triton_client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)


def triton_input(clips: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("clips", list(clips.shape), "FP32")
    tensor.set_data_from_numpy(clips, binary_data=binary)
    return tensor


def tags_of(elements) -> list[list[str]]:
    return [json.loads(e.decode() if isinstance(e, bytes) else e) for e in elements]


# -- tritonclient -----------------------------------------------------------------------


def test_triton_health_and_metadata(target):
    url, name = target
    client = triton_client(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(name)
    assert metadata["name"] == name
    assert metadata["inputs"] == [{"name": "clips", "datatype": "FP32", "shape": [-1, 4, 8, 8]}]
    assert [i["name"] for i in client.get_model_repository_index()] == [name]
    assert not client.is_model_ready("other")


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary in", "JSON in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary out", "JSON out"])
def test_triton_infer(target, binary_in, binary_out):
    url, name = target
    outputs = [triton.InferRequestedOutput("tags", binary_data=binary_out)]
    outputs.append(triton.InferRequestedOutput("scores", binary_data=binary_out))
    result = triton_client(url).infer(
        name, [triton_input(CLIPS, binary_in)], outputs=outputs, request_id="t-1"
    )
    assert tags_of(result.as_numpy("tags")) == EXPECTED_TAGS
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (2, 4)
    assert scores[0, 0] == pytest.approx(0.9, abs=1e-6)
    response = result.get_response()
    assert response["id"] == "t-1"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) is binary_out


def test_triton_default_request_asks_binary_outputs(target):
    url, name = target
    result = triton_client(url).infer(name, [triton_input(CLIPS, True)])  # no outputs named: all, binary
    assert tags_of(result.as_numpy("tags")) == EXPECTED_TAGS
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])


def test_triton_errors(target):
    url, name = target
    client = triton_client(url)
    with pytest.raises(InferenceServerException) as error:
        client.infer("other", [triton_input(CLIPS, True)])
    assert error.value.status() == "404" and "other" in error.value.message()
    bad = triton.InferInput("clips", [2, 4, 8, 9], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 4, 8, 9), np.float32))
    with pytest.raises(InferenceServerException) as error:
        client.infer(name, [bad])
    assert error.value.status() == "400" and "shape" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        client.infer(name, [triton_input(np.full((2, 4, 8, 8), 3.0, np.float32), True)])
    assert error.value.status() == "400" and "[0.0, 1.0]" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        client.infer(name, [triton_input(np.zeros((1000, 4, 8, 8), np.float32), True)])
    assert error.value.status() == "413"
    with pytest.raises(InferenceServerException) as error:
        client.infer(name, [triton_input(CLIPS, True)], outputs=[triton.InferRequestedOutput("logits")])
    assert error.value.status() == "400" and "logits" in error.value.message()


# -- KServe's REST client ---------------------------------------------------------------


def kserve_request(name: str, clips: np.ndarray, binary: bool, outputs=None) -> InferRequest:
    tensor = InferInput("clips", list(clips.shape), "FP32")
    tensor.set_data_from_numpy(clips, binary_data=binary)
    return InferRequest(name, [tensor], request_id="k-1", request_outputs=outputs)


def run(coroutine_function):
    async def with_client():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            return await coroutine_function(client)
        finally:
            await client.close()

    return asyncio.run(with_client())


def test_kserve_health(target):
    url, name = target

    async def check(client):
        return (
            await client.is_server_live(url),
            await client.is_server_ready(url),
            await client.is_model_ready(url, name),
            await client.is_model_ready(url, "other"),
        )

    assert run(check) == (True, True, True, False)


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary in", "JSON in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary out", "JSON out"])
def test_kserve_infer(target, binary_in, binary_out):
    url, name = target
    outputs = [RequestedOutput(n, {"binary_data": binary_out}) for n in ("tags", "scores")]
    answer = run(
        lambda client: client.infer(url, kserve_request(name, CLIPS, binary_in, outputs), model_name=name)
    )
    assert answer.id == "k-1"
    by_name = {o.name: o for o in answer.outputs}
    assert tags_of(by_name["tags"].as_numpy()) == EXPECTED_TAGS
    scores = by_name["scores"].as_numpy()
    assert scores.shape == (2, 4) and scores[1, 1] == pytest.approx(0.3, abs=1e-6)


def test_kserve_errors_carry_the_servers_message(target):
    url, name = target
    clips = np.zeros((1, 4, 8, 9), np.float32)
    with pytest.raises(httpx.HTTPStatusError) as error:
        run(lambda client: client.infer(url, kserve_request(name, clips, True), model_name=name))
    assert error.value.response.status_code == 400 and "shape must be" in str(error.value)
    with pytest.raises(httpx.HTTPStatusError) as error:
        run(lambda client: client.infer(url, kserve_request("other", CLIPS, False), model_name="other"))
    assert error.value.response.status_code == 404 and "unknown model" in str(error.value)
