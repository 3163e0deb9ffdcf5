"""The Open Inference Protocol (KServe V2) REST protocol: reading inference requests, building
answers and the protocol's errors.

A request is a JSON object whose tensors carry their elements either as JSON (``data``,
row-major, flat or nested exactly as ``shape``) or, with the binary tensor data extension
(``binary``), as raw bytes after the JSON. Both are checked alike and become NumPy arrays;
what a model then does with them is its own business. The JSON is read by simdjson: strict
RFC 8259 (UTF-8 only, no NaN), and a tensor's numbers go straight into an array without a
Python object per element.

Every error is a ``ProtocolError``: a status and a message naming the field at fault, which
the servers answer as ``{"error": "..."}``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import simdjson

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_ID_CHARS = 256
MAX_NAME_CHARS = 256
MAX_TENSORS = 16
MAX_DIMS = 8

# The protocol's datatypes and the (little-endian) NumPy types that hold them; BYTES elements
# are byte strings, held in an object array.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class ProtocolError(Exception):
    """A request the protocol says to refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, **extra: Any):
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra  # more fields of the error body, e.g. each member's error

    def __reduce__(self):  # travels intact from a decoding process
        return (_protocol_error, (self.message, self.status, self.extra))


def _protocol_error(message: str, status: int, extra: dict) -> ProtocolError:
    return ProtocolError(message, status, **extra)


def json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (orjson: a tenth of the standard library's time, on
    every answer); NumPy scalars and arrays as numbers and lists."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def check_model_name(name: str) -> str:
    """Model names travel in URL paths: letters, digits, ``_``, ``.`` and ``-``."""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"bad model name {name!r}: use up to {MAX_NAME_CHARS} letters, digits, '_', '.' and '-'"
        )
    return name


# -- requests ---------------------------------------------------------------------------


@dataclass
class Tensor:
    """An input tensor: its elements as an array of ``shape`` (BYTES: an object array of
    ``bytes``). ``binary`` says whether they came as binary data."""

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray
    parameters: dict = field(default_factory=dict)
    binary: bool = False


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # the output's ``binary_data`` parameter, when given


@dataclass
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: dict = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None  # None: every output

    @property
    def output_names(self) -> list[str] | None:
        return None if self.outputs is None else [o.name for o in self.outputs]

    def binary_outputs(self, names: list[str]) -> set[str]:
        """Which of the answer's outputs (``names``) go back as binary data: those whose
        requested ``binary_data`` is true, else all when ``binary_data_output`` is true."""
        default = self.parameters.get("binary_data_output") is True
        asked = {o.name: o.binary for o in self.outputs or []}
        return {n for n in names if (default if asked.get(n) is None else asked[n])}


def parse_request(body: bytes | memoryview, json_length: int | None = None) -> InferRequest:
    """Read and check an inference request: ``body`` is JSON, or with ``json_length`` (the
    ``Inference-Header-Content-Length``) a JSON header followed by binary tensor data."""
    view = memoryview(body)
    header, tail = (view, view[:0]) if json_length is None else (view[:json_length], view[json_length:])
    try:
        document = simdjson.Parser().parse(header)
    except (ValueError, RuntimeError) as e:  # RuntimeError: too deep, or too large for simdjson
        where = "the JSON header" if json_length is not None else "request body"
        hint = (
            ""
            if json_length is not None
            else "; to send tensors as binary data, give the JSON part's length in the "
            "Inference-Header-Content-Length header (binary tensor data extension)"
        )
        raise ProtocolError(f"{where} is not valid UTF-8 JSON: {_simdjson_reason(e)}{hint}") from None
    if not isinstance(document, simdjson.Object):
        raise ProtocolError(f"the request must be a JSON object, got {_kind(document)}")
    request_id = _optional(document, "id", str, "a string")
    if request_id is not None and len(request_id) > MAX_ID_CHARS:
        raise ProtocolError(f"'id' is {len(request_id)} characters long; at most {MAX_ID_CHARS} are allowed")
    parameters = parse_parameters(document, "parameters")
    if "binary_data_output" in parameters and not isinstance(parameters["binary_data_output"], bool):
        raise ProtocolError("'parameters.binary_data_output' must be true or false")
    inputs = document.get("inputs")
    if not isinstance(inputs, simdjson.Array) or len(inputs) == 0:
        raise ProtocolError(f"'inputs' must be a non-empty list of tensors, got {_kind(inputs)}")
    if len(inputs) > MAX_TENSORS:
        raise ProtocolError(f"'inputs' holds {len(inputs)} tensors; at most {MAX_TENSORS} are allowed")
    chunks = _BinaryChunks(tail)
    # Nested ``data`` is checked against its shape element by element (slow); a header with
    # no '[' beyond the lists every request has (inputs, shapes, data, outputs) has none.
    with_data = sum(isinstance(item, simdjson.Object) and "data" in item for item in inputs)
    lists = 1 + len(inputs) + with_data + ("outputs" in document)
    nested = (body if isinstance(body, bytes | bytearray) else bytes(header)).count(
        b"[", 0, len(header)
    ) > lists
    tensors = [_parse_input(item, f"inputs[{i}]", chunks, nested) for i, item in enumerate(inputs)]
    chunks.check_all_used()
    _unique([t.name for t in tensors], "inputs")
    return InferRequest(tensors, request_id, parameters, _parse_outputs(document))


def _simdjson_reason(error: Exception) -> str:
    code, _, text = str(error).partition(": ")
    return {
        "UTF8_ERROR": "it is not UTF-8",
        "UNESCAPED_CHARS": "it is not UTF-8 (or a string holds an unescaped control character)",
        "DEPTH_ERROR": "it is nested too deeply",
        "EMPTY": "it is empty",
        "NUMBER_ERROR": "a number is out of range",
        "BIGINT_ERROR": "a number is out of range",
    }.get(code, text or code)


def _kind(value: Any) -> str:
    if isinstance(value, simdjson.Object):
        return "an object"
    if isinstance(value, simdjson.Array):
        return "a list"
    return {type(None): "null", bool: "a boolean", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _optional(obj: simdjson.Object, key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise ProtocolError(f"'{key}' must be {what}, got {_kind(value)}")
    return value


def parse_parameters(obj: simdjson.Object, key: str, where: str = "") -> dict:
    """A ``parameters`` object: the protocol allows strings, numbers and booleans only."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, simdjson.Object):
        raise ProtocolError(f"'{where}{key}' must be an object, got {_kind(value)}")
    out = {}
    for name, item in value.items():  # parameters are small: read as Python values
        if not isinstance(item, str | int | float | bool):
            raise ProtocolError(
                f"'{where}{key}.{name}' must be a string, a number or a boolean, got {_kind(item)}"
            )
        out[name] = item
    return out


def _unique(names: list[str], where: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ProtocolError(f"'{where}' names {repeated} more than once")


def _parse_name(item: simdjson.Object, where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ProtocolError(f"{where} needs a 'name': a string of 1 to {MAX_NAME_CHARS} characters")
    return name


def _parse_outputs(document: simdjson.Object) -> list[RequestedOutput] | None:
    outputs = document.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, simdjson.Array):
        raise ProtocolError(f"'outputs' must be a list, got {_kind(outputs)}")
    if len(outputs) > MAX_TENSORS:
        raise ProtocolError(f"'outputs' names {len(outputs)} tensors; at most {MAX_TENSORS} are allowed")
    requested = []
    for i, item in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(item, simdjson.Object):
            raise ProtocolError(f"{where} must be an object with a string 'name'")
        name = _parse_name(item, where)
        parameters = parse_parameters(item, "parameters", f"{where}.")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError(f"'{where}.parameters.binary_data' must be true or false")
        requested.append(RequestedOutput(name, binary))
    _unique([o.name for o in requested], "outputs")
    return requested


class _BinaryChunks:
    """The binary part of a request, handed out in input order by ``binary_data_size``."""

    def __init__(self, tail: memoryview):
        self.tail = tail
        self.offset = 0

    def take(self, size: int, where: str) -> memoryview:
        if self.offset + size > len(self.tail):
            raise ProtocolError(
                f"{where}: binary_data_size {size} runs past the end of the body: the binary part after "
                f"the JSON header (Inference-Header-Content-Length) holds {len(self.tail)} bytes"
            )
        chunk = self.tail[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def check_all_used(self) -> None:
        if self.offset != len(self.tail):
            raise ProtocolError(
                f"the body holds {len(self.tail) - self.offset} bytes after the JSON header and the inputs' "
                "binary_data_size: check the Inference-Header-Content-Length header"
            )


def _parse_input(item: Any, where: str, chunks: _BinaryChunks, nested: bool) -> Tensor:
    if not isinstance(item, simdjson.Object):
        raise ProtocolError(f"{where} must be an object, got {_kind(item)}")
    name = _parse_name(item, where)
    where = f"input '{name}'"
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        shown = repr(datatype[:40]) if isinstance(datatype, str) else _kind(datatype)
        raise ProtocolError(f"{where}: 'datatype' must be one of {list(DATATYPES)}, got {shown}")
    shape = item.get("shape")
    shape = shape.as_list() if isinstance(shape, simdjson.Array) else shape
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise ProtocolError(
            f"{where}: 'shape' must be a list of at most {MAX_DIMS} non-negative integers, got {shape!r}"
        )
    parameters = parse_parameters(item, "parameters", f"{where}: ")
    size = parameters.get("binary_data_size")
    has_data = "data" in item
    if size is not None:
        if type(size) is not int or size < 0:
            raise ProtocolError(f"{where}: 'parameters.binary_data_size' must be a non-negative integer")
        if has_data:
            raise ProtocolError(f"{where}: give either 'data' or 'parameters.binary_data_size', not both")
        array = array_from_bytes(chunks.take(size, where), datatype, shape, where)
        return Tensor(name, datatype, shape, array, parameters, binary=True)
    if not has_data:
        raise ProtocolError(
            f"{where}: 'data' is missing (or give 'parameters.binary_data_size' with binary data)"
        )
    array = _array_from_json(item["data"], datatype, shape, where, nested)
    return Tensor(name, datatype, shape, array, parameters)


def array_from_bytes(chunk: memoryview, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """The elements of a tensor sent as binary data: little-endian, row-major; BOOL one byte
    (0 or 1) each; BYTES each a 4-byte little-endian length and that many bytes."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(chunk, count, where).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise ProtocolError(
            f"{where}: binary_data_size is {len(chunk)} bytes but shape {shape} of {datatype} needs "
            f"{count * dtype.itemsize}"
        )
    if datatype == "BOOL":
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise ProtocolError(f"{where}: BOOL elements must be bytes 0 or 1")
        return raw.view(np.bool_).reshape(shape)
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    return array


def _bytes_elements(chunk: memoryview, count: int, where: str) -> np.ndarray:
    elements = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(chunk):
            raise ProtocolError(f"{where}: the binary data ends inside element {i} of {count} (BYTES)")
        length = int.from_bytes(chunk[offset : offset + 4], "little")
        offset += 4
        if offset + length > len(chunk):
            raise ProtocolError(f"{where}: element {i} (BYTES) runs past the input's binary data")
        elements[i] = bytes(chunk[offset : offset + length])
        offset += length
    if offset != len(chunk):
        raise ProtocolError(f"{where}: {len(chunk) - offset} bytes are left after the {count} BYTES elements")
    return elements


def _array_from_json(data: Any, datatype: str, shape: list[int], where: str, nested: bool) -> np.ndarray:
    if not isinstance(data, simdjson.Array):
        raise ProtocolError(f"{where}: 'data' must be a list, got {_kind(data)}")
    dtype = DATATYPES[datatype]
    expected = math.prod(shape)
    if datatype in ("BOOL", "BYTES"):
        values = data.as_list()
        flat = _flatten(values, shape, where)
        kind = bool if datatype == "BOOL" else str
        if not all(type(v) is kind for v in flat):
            raise ProtocolError(f"{where}: 'data' of a {datatype} tensor must hold {kind.__name__}s only")
        if datatype == "BOOL":
            return np.array(flat, dtype=bool).reshape(shape)
        array = np.empty(len(flat), dtype=object)
        array[:] = [v.encode() for v in flat]
        return array.reshape(shape)
    of_type = "d" if dtype.kind == "f" else ("u" if dtype.kind == "u" else "i")
    try:
        values = np.frombuffer(
            data.as_buffer(of_type=of_type), dtype={"d": "f8", "u": "u8", "i": "i8"}[of_type]
        )
    except TypeError:
        what = "numbers" if dtype.kind == "f" else "integers"
        raise ProtocolError(f"{where}: 'data' must hold {what} only ({datatype}), got other values") from None
    except ValueError:
        raise ProtocolError(f"{where}: 'data' holds a number out of range for {datatype}") from None
    if len(values) != expected:
        raise ProtocolError(f"{where}: 'data' holds {len(values)} values but shape {shape} needs {expected}")
    if nested:  # lists in the data: they must follow the shape exactly
        _flatten(data.as_list(), shape, where)
    return _cast(values, dtype, datatype, where).reshape(shape)


def _flatten(values: list, shape: list[int], where: str) -> list:
    """The row-major elements of ``values``, given flat or nested exactly as ``shape``."""
    expected = math.prod(shape)
    if len(values) == expected and not any(isinstance(v, list) for v in values):
        return values
    if len(shape) < 2 and expected == len(values):
        raise ProtocolError(f"{where}: 'data' holds nested lists where shape {shape} needs values")
    flat: list = []

    def walk(value: Any, dims: list[int]) -> None:
        if not dims:
            if isinstance(value, list):
                raise ProtocolError(f"{where}: 'data' is nested deeper than shape {shape}")
            flat.append(value)
            return
        if not isinstance(value, list) or len(value) != dims[0]:
            raise ProtocolError(f"{where}: nested 'data' does not follow shape {shape}")
        for v in value:
            walk(v, dims[1:])

    walk(values, list(shape))
    return flat


def _cast(values: np.ndarray, dtype: np.dtype, datatype: str, where: str) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if len(values) and (values.min() < info.min or values.max() > info.max):
            raise ProtocolError(f"{where}: 'data' holds integers out of range for {datatype}")
        return values.astype(dtype)
    with np.errstate(over="ignore"):
        array = values.astype(dtype)
    if not np.isfinite(array).all():
        raise ProtocolError(f"{where}: 'data' holds numbers out of range for {datatype}")
    return array


# -- checks a model makes ----------------------------------------------------------------


def check_unit_clips(
    tensor: Tensor, trailing: tuple[int, ...], low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """``tensor`` as float32 ``[n, *trailing]`` (n ≥ 1), every value finite and in [low, high]."""
    where = f"input '{tensor.name}'"
    if tensor.datatype != "FP32":
        raise ProtocolError(f"{where}: datatype must be FP32, got {tensor.datatype}")
    expected = ["n", *trailing]
    if len(tensor.shape) != len(expected) or tuple(tensor.shape[1:]) != tuple(trailing):
        raise ProtocolError(f"{where}: shape must be {expected}, got {tensor.shape}")
    if tensor.shape[0] < 1:
        raise ProtocolError(f"{where}: the batch is empty (shape {tensor.shape})")
    array = tensor.array
    # min and max see NaN; one pass each, without the temporary arrays of isfinite().all().
    low_seen, high_seen = array.min(), array.max()
    if not (math.isfinite(low_seen) and math.isfinite(high_seen)):
        raise ProtocolError(f"{where}: 'data' holds values that are not finite")
    if low_seen < low or high_seen > high:
        raise ProtocolError(f"{where}: values must lie in [{low}, {high}]")
    return array


# -- answers ----------------------------------------------------------------------------


def bytes_tensor(name: str, strings: list[str], parameters: dict | None = None) -> dict:
    """A BYTES tensor of shape [len(strings)]."""
    return output_tensor(name, "BYTES", [len(strings)], list(strings), parameters)


def fp32_tensor(name: str, array: np.ndarray, parameters: dict | None = None) -> dict:
    """An FP32 output; ``data`` stays an array until the answer is written (as JSON or binary)."""
    array = np.asarray(array, dtype=np.float32)
    return output_tensor(name, "FP32", list(array.shape), array, parameters)


def output_tensor(name: str, datatype: str, shape: list[int], data: Any, parameters: dict | None) -> dict:
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
