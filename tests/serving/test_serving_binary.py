"""The binary tensor data extension, byte by byte: bodies framed by hand, checked as strictly
as JSON tensors, and the decoding paths (in place, thread, worker process) agreeing."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from fanflow.serving import binary
from fanflow.serving.decoding import Decoder
from fanflow.serving.model_server import create_model_app
from fanflow.serving.protocol import ProtocolError, parse_request
from tests.serving.serving_predictors import BrightnessTagger, clips_with


@pytest.fixture
def server(serve):
    return serve(create_model_app(BrightnessTagger(), "bright"))


def framed(header: dict, *tails: bytes, length: int | None = None) -> tuple[bytes, dict]:
    text = json.dumps(header).encode()
    headers = {binary.HEADER: str(len(text) if length is None else length)}
    return text + b"".join(tails), headers


def clips_header(n: int = 1, size: int | None = None, **extra) -> dict:
    size = n * 256 * 4 if size is None else size
    tensor = {
        "name": "clips",
        "datatype": "FP32",
        "shape": [n, 4, 8, 8],
        "parameters": {"binary_data_size": size},
    }
    return {"inputs": [tensor], **extra}


def post(server, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/bright/infer", content=body, headers=headers)


def assert_400(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    for word in words:
        assert word in response.json()["error"], response.json()["error"]


def test_binary_in_binary_out(server):
    clips = clips_with({"r0c1": 0.7}, n=3)
    body, headers = framed(clips_header(3, parameters={"binary_data_output": True}), clips.tobytes())
    response = post(server, body, headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    answer = binary.decode(response.content, int(response.headers[binary.HEADER]))
    tags, scores = answer["outputs"]
    assert tags["data"] == ['["r0c1"]'] * 3
    assert scores["data"].dtype == np.float32 and scores["data"].shape == (3, 4)
    assert scores["parameters"]["binary_data_size"] == 3 * 4 * 4


def test_one_output_binary_the_other_json(server):
    clips = clips_with({"r1c0": 0.9})
    outputs = [{"name": "scores", "parameters": {"binary_data": True}}, {"name": "tags"}]
    body, headers = framed(clips_header(1, outputs=outputs), clips.tobytes())
    response = post(server, body, headers)
    header = json.loads(response.content[: int(response.headers[binary.HEADER])])
    assert [o["name"] for o in header["outputs"]] == ["scores", "tags"]
    assert "data" not in header["outputs"][0] and header["outputs"][1]["data"] == ['["r1c0"]']


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda c: framed(clips_header(1), c, length=10_000_000), ["Inference-Header-Content-Length"]),
        (lambda c: (framed(clips_header(1), c)[0], {binary.HEADER: "12abc"}), ["byte count"]),
        (
            lambda c: (framed(clips_header(1), c)[0], {binary.HEADER: "0"}),
            ["Inference-Header-Content-Length"],
        ),
        (lambda c: framed(clips_header(1), c, length=20), ["JSON header"]),
        (lambda c: framed(clips_header(1), c[:-4]), ["runs past"]),
        (lambda c: framed(clips_header(1), c + b"\0" * 4), ["4 bytes after"]),
        (lambda c: framed(clips_header(1, size=1020), c[:1020]), ["needs 1024"]),
        (lambda c: framed(clips_header(1, size=-1), c), ["non-negative"]),
        (lambda c: framed(clips_header(1, size="1024"), c), ["non-negative"]),
        (lambda c: framed(clips_header(1, size=1.5), c), ["non-negative"]),
        (lambda c: (json.dumps(clips_header(1)).encode() + c, {}), ["not valid UTF-8 JSON", binary.HEADER]),
        (lambda c: framed(clips_header(1), np.full(256, np.nan, np.float32).tobytes()), ["not finite"]),
        (lambda c: framed(clips_header(1), np.full(256, 2.0, np.float32).tobytes()), ["[0.0, 1.0]"]),
    ],
    ids=[
        "header length past the body",
        "header length not a number",
        "header length zero",
        "header length cuts the JSON",
        "binary part too short",
        "bytes left over",
        "size not what the shape needs",
        "negative size",
        "size a string",
        "size a fraction",
        "binary without the header",
        "NaN",
        "out of range",
    ],
)
def test_bad_binary_requests_are_400_naming_the_fault(server, make, words):
    body, headers = make(clips_with({}).tobytes())
    assert_400(post(server, body, headers), *words)
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_binary_tensors_of_every_datatype_read_like_json_ones():
    for datatype, values in [
        ("FP32", [0.5, 1.0]),
        ("FP64", [0.25, -3.0]),
        ("INT8", [-128, 127]),
        ("UINT16", [0, 65535]),
        ("INT64", [-(2**40), 2**40]),
        ("BOOL", [True, False]),
        ("BYTES", ["ab", ""]),
    ]:
        as_json = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2], "data": values}]}
        message = {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": [2],
                    "data": np.array(values, dtype=object if datatype == "BYTES" else None),
                }
            ]
        }
        parts, length = binary.encode(message, {"x"})
        from_json = parse_request(json.dumps(as_json).encode()).inputs[0]
        from_binary = parse_request(b"".join(parts), length).inputs[0]
        assert from_binary.binary and not from_json.binary
        assert from_binary.array.tolist() == from_json.array.tolist(), datatype


@pytest.mark.parametrize(
    "datatype, data, words",
    [
        ("INT8", [1, 300], "out of range"),
        ("UINT8", [1, -1], "out of range"),
        ("INT32", [1, 2.5], "integers only"),
        ("FP16", [1, 1e6], "out of range"),
        ("BOOL", [True, 1], "bools only"),
        ("BYTES", ["a", 1], "strs only"),
    ],
)
def test_json_elements_must_fit_their_datatype(datatype, data, words):
    request = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2], "data": data}]}
    with pytest.raises(ProtocolError, match=words):
        parse_request(json.dumps(request).encode())


def test_the_decoding_paths_agree():
    """In place, in a thread (a large binary body) and in a worker process (a large JSON body)
    give the same request, and the same error."""
    clips = np.random.default_rng(0).random((40, 4, 8, 8), dtype=np.float32)
    as_json = json.dumps(
        {
            "id": "x",
            "inputs": [
                {
                    "name": "clips",
                    "datatype": "FP32",
                    "shape": [40, 4, 8, 8],
                    "data": clips.reshape(-1).tolist(),
                }
            ],
        }
    ).encode()
    parts, length = binary.encode(
        {"id": "x", "inputs": [{"name": "clips", "datatype": "FP32", "shape": [40, 4, 8, 8], "data": clips}]},
        {"clips"},
    )
    as_binary = b"".join(parts)
    bad = as_json.replace(b'"FP32"', b'"FP99"')

    async def decode_all():
        decoder = Decoder(inline_bytes=1000)
        await decoder.start()
        try:
            results = [await decoder.decode(as_json, None), await decoder.decode(as_binary, length)]
            with pytest.raises(ProtocolError, match="FP99") as error:
                await decoder.decode(bad, None)
            return results, error.value.status
        finally:
            await decoder.stop()

    (from_worker, from_thread), status = asyncio.run(decode_all())
    in_place = parse_request(as_json)
    for request in (from_worker, from_thread):
        assert request.id == "x"
        np.testing.assert_array_equal(request.inputs[0].array, in_place.inputs[0].array)
    np.testing.assert_array_equal(in_place.inputs[0].array, clips)
    assert status == 400
