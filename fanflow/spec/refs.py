"""References inside a workflow: ``${params.x}``, ``${ingest}``, ``${ingest.test.x}``,
``${train[*]}``, ``${train[*].metrics}``, ``${item.model}``.

A string that is exactly one reference stands for the referenced value, whatever its type.
A string with references inside other text is interpolated (each value turned into text).
``$${`` writes a literal ``${``. In a list, an element that is exactly a collecting
reference (``${train[*]}``) is spliced in, so ``[${a[*]}, ${b[*]}, ${c}]`` is one flat list
of every branch of ``a``, every branch of ``b`` and ``c``: that is how one step fans in over
several different steps.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

PARAMS = "params"
ITEM = "item"
RESERVED_ROOTS = frozenset({PARAMS, ITEM})

_REF = re.compile(r"(?<!\$)\$\{([^{}]*)\}")
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_SEGMENT = re.compile(rf"\.({_NAME})|\[(\*|-?\d+)\]")
_ROOT = re.compile(rf"\s*({_NAME}(?:/{_NAME})*)")  # a sub-workflow's steps are named outer/inner


class RefSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Ref:
    """A parsed reference. ``path`` holds keys (str) and list indexes (int)."""

    root: str
    collect: bool = False  # ${step[*]...}: the outputs of every branch of a fanned-out step
    path: tuple[str | int, ...] = ()

    @property
    def is_step(self) -> bool:
        return self.root not in RESERVED_ROOTS

    def __str__(self) -> str:
        text = self.root + ("[*]" if self.collect else "")
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else f".{part}"
        return "${" + text + "}"


@functools.lru_cache(maxsize=4096)  # the same few references are resolved for every task
def parse_ref(body: str) -> Ref:
    """Parse the inside of ``${...}``."""
    match = _ROOT.match(body)
    if not match:
        raise RefSyntaxError(f"'${{{body}}}' is not a reference: expected a name such as params.x")
    root, pos, collect, path = match.group(1), match.end(), False, []
    body = body.rstrip()
    while pos < len(body):
        seg = _SEGMENT.match(body, pos)
        if not seg:
            raise RefSyntaxError(f"'${{{body}}}' is not a reference: unexpected {body[pos:]!r}")
        if seg.group(1) is not None:
            path.append(seg.group(1))
        elif seg.group(2) == "*":
            if path or collect:
                raise RefSyntaxError(f"'${{{body}}}': [*] may only follow a step name, as in ${{train[*]}}")
            collect = True
        else:
            path.append(int(seg.group(2)))
        pos = seg.end()
    if collect and root in RESERVED_ROOTS:
        raise RefSyntaxError(f"'${{{body}}}': [*] collects a fanned-out step's branches, not {root}")
    return Ref(root, collect, tuple(path))


def whole_ref(text: str) -> Ref | None:
    """The reference a string consists of entirely, or None."""
    match = _REF.fullmatch(text.strip()) if "${" in text else None
    return parse_ref(match.group(1)) if match else None


def refs_in_text(text: str) -> Iterator[Ref]:
    for match in _REF.finditer(text):
        yield parse_ref(match.group(1))


def iter_refs(value: Any, where: tuple = ()) -> Iterator[tuple[Ref, tuple]]:
    """Every reference in a nested value, with the path (keys and indexes) where it stands.
    Raises RefSyntaxError for a malformed one."""
    if isinstance(value, str):
        if "${" in value:
            for ref in refs_in_text(value):
                yield ref, where
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str | dict | list):  # numbers and the like hold no reference
                yield from iter_refs(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str | dict | list):
                yield from iter_refs(item, (*where, index))


def substitute(value: Any, lookup) -> Any:
    """Replace references in a nested value. ``lookup(ref)`` returns a referenced value; for a
    collecting reference it returns a list, which is spliced when it stands alone in a list."""
    return template(value)(lookup)


def template(value: Any) -> Callable[[Callable[[Ref], Any]], Any]:
    """``substitute`` with the value read once: a function of ``lookup`` that builds the value
    with its references replaced (new dicts and lists every time), for a step's ``with`` that
    is resolved for each of its tasks."""
    if isinstance(value, str):
        if "${" not in value:
            text = value.replace("$${", "${")
            return lambda lookup: text
        ref = whole_ref(value)
        if ref is not None:
            return lambda lookup: lookup(ref)
        return lambda lookup: _REF.sub(lambda m: _as_text(lookup(parse_ref(m.group(1)))), value).replace("$${", "${")
    if isinstance(value, dict):
        parts = [(key, template(item)) for key, item in value.items()]
        return lambda lookup: {key: part(lookup) for key, part in parts}
    if isinstance(value, list):
        elements = []  # (spliced, what builds it)
        for item in value:
            ref = whole_ref(item) if isinstance(item, str) else None
            if ref is not None and ref.collect:
                elements.append((True, lambda lookup, ref=ref: lookup(ref)))
            else:
                elements.append((False, template(item)))

        def build(lookup) -> list:
            out = []
            for spliced, part in elements:
                if spliced:
                    out.extend(part(lookup))
                else:
                    out.append(part(lookup))
            return out

        return build
    return lambda lookup: value


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, sort_keys=True)
    return str(value)
