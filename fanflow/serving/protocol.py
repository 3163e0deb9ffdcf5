"""The Open Inference Protocol (KServe V2) over JSON: reading requests, writing tensors and
answering errors in the protocol's shape.

Requests hold tensors as ``{"name", "shape", "datatype", "data"}`` with ``data`` flattened in
row-major order (nested lists of the same shape are accepted too). Every error is a non-2xx
status with a body ``{"error": "..."}``: 400 for a body that is not valid JSON or not a valid
request, 404 for an unknown model or path, 413 for a body over the limit, 503 while not ready.
Optional fields are omitted rather than sent as ``null``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

# The protocol's datatypes and the NumPy types that hold them.
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class ProtocolError(Exception):
    """A request the protocol says to refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, **extra: Any):
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra  # more fields of the error body, e.g. each member's error


def check_model_name(name: str) -> str:
    """Model names travel in URL paths: letters, digits, ``_``, ``.`` and ``-``."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ValueError(f"bad model name {name!r}: use letters, digits, '_', '.' and '-'")
    return name


# -- responses --------------------------------------------------------------------------


def json_response(content: Any, status: int = 200) -> Response:
    return JSONResponse(content, status_code=status)


def error_response(message: str, status: int, **extra: Any) -> Response:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    return error_response(exc.message, exc.status, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(message, exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)


# Starlette's ``exception_handlers``: every error a server sends has the protocol's shape.
EXCEPTION_HANDLERS = {
    ProtocolError: _protocol_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}


# -- requests ---------------------------------------------------------------------------


async def read_body(request: Request, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 past ``max_bytes`` and with 400 when empty."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ProtocolError(f"request body of {int(length)} bytes is over the limit of {max_bytes}", 413)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ProtocolError(f"request body is over the limit of {max_bytes} bytes", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise ProtocolError("empty request body: expected a JSON inference request")
    return body


def parse_json(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("request body is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"the request body must be a JSON object, got {type(value).__name__}")
    return value


@dataclass
class InputTensor:
    name: str
    shape: list[int]
    datatype: str
    data: Any


@dataclass
class InferRequest:
    inputs: list[InputTensor]
    id: str | None = None
    parameters: dict = field(default_factory=dict)
    outputs: list[str] | None = None  # names of the outputs asked for; None: all of them


def parse_infer_request(body: dict) -> InferRequest:
    """Check an inference request's structure (not its tensors' contents)."""
    request_id = _optional(body, "id", str, "a string")
    parameters = _optional(body, "parameters", dict, "an object") or {}
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    tensors = [_parse_input(item, i) for i, item in enumerate(inputs)]
    outputs = _optional(body, "outputs", list, "a list")
    names = None
    if outputs is not None:
        names = []
        for i, item in enumerate(outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ProtocolError(f"outputs[{i}] must be an object with a string 'name'")
            names.append(item["name"])
    return InferRequest(tensors, request_id, parameters, names)


def _optional(body: dict, key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise ProtocolError(f"'{key}' must be {what}, got {type(value).__name__}")
    return value


def _parse_input(item: Any, i: int) -> InputTensor:
    if not isinstance(item, dict):
        raise ProtocolError(f"inputs[{i}] must be an object")
    name = item.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"inputs[{i}] needs a string 'name'")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"input '{name}': unknown datatype {datatype!r}; expected one of {list(DATATYPES)}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of non-negative integers, got {shape!r}")
    if "data" not in item or not isinstance(item["data"], list):
        raise ProtocolError(f"input '{name}': 'data' must be a list")
    _optional(item, "parameters", dict, "an object")
    return InputTensor(name, shape, datatype, item["data"])


def decode_fp32(
    tensor: InputTensor, trailing: tuple[int, ...], low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """A float32 array of shape ``[n, *trailing]`` (n ≥ 1) with values in [low, high]."""
    where = f"input '{tensor.name}'"
    if tensor.datatype != "FP32":
        raise ProtocolError(f"{where}: datatype must be FP32, got {tensor.datatype}")
    expected = ["n", *trailing]
    if len(tensor.shape) != len(expected) or tuple(tensor.shape[1:]) != tuple(trailing):
        raise ProtocolError(f"{where}: shape must be {expected}, got {tensor.shape}")
    if tensor.shape[0] < 1:
        raise ProtocolError(f"{where}: the batch is empty (shape {tensor.shape})")
    try:
        array = np.array(tensor.data)
    except (ValueError, TypeError):
        raise ProtocolError(f"{where}: 'data' is not a rectangular list of numbers") from None
    if array.dtype.kind not in "fiu":
        raise ProtocolError(f"{where}: 'data' must hold numbers only (FP32)")
    expected_size = math.prod(tensor.shape)
    if array.size != expected_size:
        raise ProtocolError(
            f"{where}: 'data' holds {array.size} values but shape {tensor.shape} needs {expected_size}"
        )
    array = array.reshape(tensor.shape).astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ProtocolError(f"{where}: 'data' holds values that are not finite")
    if array.min() < low or array.max() > high:
        raise ProtocolError(f"{where}: values must lie in [{low}, {high}]")
    return array


# -- tensors ----------------------------------------------------------------------------


def bytes_tensor(name: str, strings: list[str], parameters: dict | None = None) -> dict:
    """A BYTES tensor of shape [len(strings)]."""
    return _tensor(name, "BYTES", [len(strings)], list(strings), parameters)


def fp32_tensor(name: str, array: np.ndarray, parameters: dict | None = None) -> dict:
    array = np.asarray(array, dtype=np.float32)
    return _tensor(name, "FP32", list(array.shape), array.reshape(-1).tolist(), parameters)


def _tensor(name: str, datatype: str, shape: list[int], data: list, parameters: dict | None) -> dict:
    out = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    if parameters:
        out["parameters"] = parameters
    return out


def metadata_tensor(name: str, datatype: str, shape: list[int]) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape}


def infer_response(
    model_name: str,
    outputs: list[dict],
    request_id: str | None = None,
    model_version: str | None = None,
    parameters: dict | None = None,
) -> dict:
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = parameters
    response["outputs"] = outputs
    return response


def select_outputs(outputs: list[dict], names: list[str] | None) -> list[dict]:
    """The outputs a request asked for, in its order; an unknown name is a 400."""
    if names is None:
        return outputs
    by_name = {o["name"]: o for o in outputs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ProtocolError(f"unknown output(s) {unknown}; this model has {list(by_name)}")
    return [by_name[n] for n in names]
