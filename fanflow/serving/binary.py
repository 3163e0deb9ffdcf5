"""The protocol's binary tensor data extension: a body that is a JSON header followed by the
raw bytes of some tensors, the header's length in the ``Inference-Header-Content-Length``
HTTP header.

A tensor sent this way has no ``data`` but ``parameters.binary_data_size`` (its byte count);
the binary parts follow the header in the order of the tensors. Elements are little-endian
and row-major; BOOL is one byte each, BYTES a 4-byte little-endian length before each
element. A request asks for binary outputs with the request parameter
``binary_data_output: true`` or an output's ``binary_data: true``. This is the format of
tritonclient's and KServe's clients when they ``set_data_from_numpy`` (their default).

Reading requests is ``protocol.parse_request``; this module writes bodies (answers, and the
requests of fanflow's own clients) and reads answers.
"""

from __future__ import annotations

import numpy as np
import orjson

from fanflow.serving.protocol import DATATYPES, ProtocolError, array_from_bytes, json_bytes

HEADER = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"  # its name in the server metadata's ``extensions``


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length a request gives in its ``HEADER`` (None: the body is all JSON)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        raise ProtocolError(f"the {HEADER} header must be a byte count, got {value[:40]!r}")
    length = int(text)
    if not 0 < length <= body_size:
        raise ProtocolError(
            f"the {HEADER} header says {length} bytes of JSON, but the body holds {body_size}"
        )
    return length


def array_to_bytes(datatype: str, data) -> bytes | memoryview:
    """A tensor's elements in the binary format (BYTES: ``str`` or ``bytes`` elements)."""
    if datatype == "BYTES":
        parts = []
        for element in np.asarray(data, dtype=object).reshape(-1):
            raw = element.encode() if isinstance(element, str) else bytes(element)
            parts += [len(raw).to_bytes(4, "little"), raw]
        return b"".join(parts)
    array = np.ascontiguousarray(data, dtype=DATATYPES[datatype])
    return memoryview(array).cast("B")


def encode(message: dict, binary: set[str] | frozenset = frozenset()) -> tuple[list, int | None]:
    """The body parts of ``message`` (an answer, or a request with ``inputs``) and the JSON
    header's length, or None when no tensor goes as binary. Tensors named in ``binary`` go as
    binary data, the others as JSON; ``data`` may be an array or a list."""
    key = "outputs" if "outputs" in message and "inputs" not in message else "inputs"
    tensors, tails = [], []
    for tensor in message[key]:
        data = tensor["data"]
        if tensor["name"] in binary:
            raw = array_to_bytes(tensor["datatype"], data)
            parameters = {**tensor.get("parameters", {}), "binary_data_size": len(raw)}
            tensor = {k: v for k, v in tensor.items() if k != "data"} | {"parameters": parameters}
            tails.append(raw)
        elif isinstance(data, np.ndarray):
            tensor = {**tensor, "data": _json_elements(tensor["datatype"], data)}
        tensors.append(tensor)
    header = json_bytes({**message, key: tensors})
    return [header, *tails], (len(header) if tails else None)


def _json_elements(datatype: str, array: np.ndarray) -> list:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [e.decode() if isinstance(e, bytes) else e for e in flat]
    return flat.tolist()


def decode(body: bytes, json_length: int | None = None) -> dict:
    """Read an answer (JSON, or a JSON header and binary outputs): each output's ``data``
    becomes a list (JSON) or an array (binary; BYTES elements as ``str`` when they are UTF-8).
    ValueError when it is not an answer that can be read."""
    header = body if json_length is None else body[:json_length]
    message = orjson.loads(header)
    if not isinstance(message, dict) or not isinstance(message.get("outputs"), list):
        raise ValueError("the answer has no 'outputs' list")
    offset = len(header)
    view = memoryview(body)
    for output in message["outputs"]:
        parameters = output.get("parameters") if isinstance(output, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        if type(size) is not int or size < 0 or offset + size > len(body):
            raise ValueError(f"output {output.get('name')!r}: binary_data_size {size!r} runs past the body")
        output["data"] = _array(view[offset : offset + size], output)
        offset += size
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes after the answer's binary outputs")
    return message


def _array(chunk: memoryview, output: dict):
    datatype, shape = output.get("datatype"), output.get("shape")
    if datatype not in DATATYPES or not isinstance(shape, list):
        raise ValueError(f"output {output.get('name')!r}: bad datatype or shape")
    try:
        array = array_from_bytes(chunk, datatype, shape, f"output {output.get('name')!r}")
    except ProtocolError as e:
        raise ValueError(e.message) from None
    if datatype == "BYTES":
        return [e.decode("utf-8", "surrogateescape") for e in array.reshape(-1)]
    return array
