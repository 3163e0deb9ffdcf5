"""Reading a workflow's YAML safely, and where each key and value of it stands, for errors
that name the line.

Reading is bounded and takes one pass: the values are built straight from the parser's
events (libyaml's where installed), and what cannot be a workflow is refused on the way, each
with its line, before it costs anything: nesting deeper than ``MAX_DEPTH``, aliases that
would expand the document by more than ``MAX_ALIAS_VALUES`` values (a "billion laughs"; an
alias is the value it names, not a copy), an alias inside its own anchor, tags other than
plain YAML's (``!!python/object`` ...), keys that are not plain text, duplicate keys (YAML
itself would silently keep the last one, hiding a second step of the same name) and a second
document. Positions are kept for every key and every list item that is itself a list or a
mapping (not for each of a long list's plain values, which would cost more than the values).
"""

from __future__ import annotations

from typing import Any

import yaml

from fanflow.spec.errors import SpecError, SpecIssue

Path = tuple  # keys (str) and list indexes (int)

MAX_DEPTH = 100
MAX_ALIAS_VALUES = 100_000
_CORE = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_CORE + name for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A position: (line, column, {key or index: position} for a mapping or list, else None).
Pos = tuple


class Positions:
    """Maps a path inside the document to its 1-based (line, column): entries of ``table``
    first (steps inlined from sub-workflows), then the document's own positions."""

    def __init__(self, table: dict[Path, tuple[int, int]] | None = None, file: str | None = None,
                 root: Pos | None = None):
        self.table = table or {}
        self.file = file
        self._root = root

    def locate(self, path: Path) -> tuple[int | None, int | None]:
        """The position of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        depth, found = self._in_document(path)
        for k in range(len(path), -1, -1):
            if path[:k] in self.table and k >= depth:
                return self.table[path[:k]]
        return found

    def _in_document(self, path: Path) -> tuple[int, tuple[int | None, int | None]]:
        pos = self._root
        if pos is None:
            return -1, (None, None)
        depth = 0
        for part in path:
            inner = pos[2].get(part) if pos[2] else None
            if inner is None:
                break
            pos, depth = inner, depth + 1
        return depth, (pos[0], pos[1])

    def issue(self, message: str, path: Path = ()) -> SpecIssue:
        line, column = self.locate(path)
        return SpecIssue(message, field=dotted(path), file=self.file, line=line, column=column)


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def load_yaml_with_positions(text: str, file: str | None) -> tuple[Any, Positions]:
    """Parse YAML safely and within bounds (see the module's documentation)."""
    loader = _Loader(text)
    try:
        data, root = _Builder(loader, file).document()
    except yaml.YAMLError as exc:
        raise SpecError(_yaml_issue(exc, text, file)) from None
    finally:
        loader.dispose()
    if root is None:
        raise SpecError(SpecIssue("the file is empty: expected a workflow with name and steps", file=file))
    return data, Positions(file=file, root=root)


def _yaml_issue(exc: yaml.YAMLError, text: str, file: str | None) -> SpecIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids: only its offset is known
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - before.rfind("\n")
        problem = f"the character {exc.character!r} is not allowed in YAML"
    else:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return SpecIssue(f"not valid YAML: {problem}", file=file, line=line, column=column)


class _Collection:
    """A mapping or list being built, with what its events still owe it."""

    __slots__ = ("anchor", "event", "first_line", "is_mapping", "key", "merges", "positions", "start", "value")

    def __init__(self, event, is_mapping: bool, start: int):
        self.event, self.is_mapping, self.anchor, self.start = event, is_mapping, event.anchor, start
        self.value: dict | list = {} if is_mapping else []
        self.positions: dict = {}
        self.key: Any = _NO_KEY  # a mapping's key waiting for its value
        self.first_line: dict = {}  # a mapping's keys -> the line each first stood on
        self.merges: list = []  # mappings merged in with `<<:`


_NO_KEY = object()
_MERGE = object()


class _Builder:
    """Python values and positions from a YAML parser's events, refusing on the way what
    cannot be in a workflow."""

    def __init__(self, loader, file: str | None):
        self.loader, self.file = loader, file
        self.resolved: dict[str, str] = {}  # plain scalar -> its tag; a large workflow repeats its values
        self.anchors: dict[str, tuple[Any, int, Pos]] = {}  # anchor -> (value, values it stands for, position)
        self.stack: list[_Collection] = []
        self.values = 0  # the document's values, with every alias written out
        self.real = 0  # the values its text holds

    def refuse(self, message: str, event) -> SpecError:
        return SpecError(SpecIssue(message, file=self.file, line=event.start_mark.line + 1,
                                   column=event.start_mark.column + 1))

    def document(self) -> tuple[Any, Pos | None]:
        loader, stack, result, documents = self.loader, self.stack, (None, None), 0
        while loader.check_event():
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent and stack and not stack[-1].is_mapping and event.anchor is None:
                value = self.scalar(event)  # most values: a plain item of a list
                stack[-1].value.append("<<" if value is _MERGE else value)
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise self.refuse("expected one YAML document, found a second one (---)", event)
            elif kind is yaml.ScalarEvent:
                value, position = self.scalar(event), _position(event, None)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1, position)
                result = self.add(value, position, event, is_scalar=True) or result
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self.open(event, kind is yaml.MappingStartEvent)
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                result = self.close(event) or result
            elif kind is yaml.AliasEvent:
                result = self.alias(event) or result
        return result

    # -- values ---------------------------------------------------------------------------
    def scalar(self, event) -> Any:
        self.values += 1  # a scalar adds no alias expansion: no bound to check
        self.real += 1
        tag, value = event.tag, event.value
        if tag is None or tag == "!":
            if not event.implicit[0]:
                return value  # quoted: text
            tag = self.resolved.get(value)
            if tag is None:
                tag = self.resolved[value] = self.loader.resolve(yaml.ScalarNode, value, (True, False))
        elif tag not in _PLAIN_TAGS:
            raise self.refuse(_tag_message(tag), event)
        if tag == _CORE + "str":
            return value
        if tag == _CORE + "merge":
            return _MERGE
        if tag == _CORE + "int" and value.isascii() and value.isdigit() and (value[0] != "0" or value == "0"):
            return int(value)  # what YAML 1.1 makes of it too (a leading 0 is octal: not here)
        if tag not in _PLAIN_TAGS:  # an implicit `=` (YAML's value key): plain text here
            return value
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark)
        return self.loader.yaml_constructors[tag](self.loader, node)

    def open(self, event, is_mapping: bool) -> None:
        if event.tag not in (None, "!", _CORE + ("map" if is_mapping else "seq")):
            raise self.refuse(_tag_message(event.tag), event)
        parent = self.stack[-1] if self.stack else None
        if parent is not None and parent.is_mapping and parent.key is _NO_KEY:
            raise self.refuse("a key must be plain text, not a list or a mapping", event)
        self.count(event, 1)
        self.stack.append(_Collection(event, is_mapping, self.values - 1))
        if len(self.stack) > MAX_DEPTH:
            raise self.refuse(f"nested more than {MAX_DEPTH} levels deep; a workflow needs a few", event)

    def close(self, event):
        done = self.stack.pop()
        start = done.event
        value = done.value
        if done.merges:
            value = _merged(done.merges, value)
        position = (start.start_mark.line + 1, start.start_mark.column + 1, done.positions)
        if done.anchor is not None:
            self.anchors[done.anchor] = (value, self.values - done.start, position)
        return self.add(value, position, start)

    def alias(self, event):
        if any(c.anchor == event.anchor for c in self.stack):
            raise self.refuse(f"the alias *{event.anchor} is inside its own anchor: an endless value", event)
        found = self.anchors.get(event.anchor)
        if found is None:
            raise self.refuse(f"not valid YAML: found undefined alias {event.anchor!r}", event)
        value, size, position = found
        self.count(event, size, real=1)
        return self.add(value, position if position[2] else _position(event, None), event,
                        is_scalar=not isinstance(value, dict | list))

    def count(self, event, values: int, real: int | None = None) -> None:
        self.values += values
        self.real += values if real is None else real
        if self.values - self.real > MAX_ALIAS_VALUES:
            raise self.refuse(f"aliases expand the document by more than {MAX_ALIAS_VALUES:,} values (a "
                              "YAML bomb?); write the values out, or use fewer aliases", event)

    # -- putting a value in its place -----------------------------------------------------
    def add(self, value: Any, position: Pos, event, is_scalar: bool = False):
        """Put a finished value into the collection being built; the document's value and
        position when there is none (the document is done)."""
        parent = self.stack[-1] if self.stack else None
        if value is _MERGE and (parent is None or parent.key is not _NO_KEY or not parent.is_mapping):
            value = "<<"  # a merge key only merges where a key stands
        if parent is None:
            return value, position
        if not parent.is_mapping:
            if not is_scalar:
                parent.positions[len(parent.value)] = position
            parent.value.append(value)
            return None
        if parent.key is _NO_KEY:  # this is a key
            if not is_scalar:
                raise self.refuse("a key must be plain text, not a list or a mapping", event)
            if value is not _MERGE:
                first = parent.first_line.get(value)
                if first is not None:
                    raise self.refuse(f"duplicate key {value!r} (first at line {first})", event)
                parent.first_line[value] = event.start_mark.line + 1
                parent.positions[value] = (position[0], position[1], None)
            parent.key = value
            return None
        key, parent.key = parent.key, _NO_KEY
        if key is _MERGE:
            self.merge(parent, value, event)
        else:
            if position[2]:
                parent.positions[key] = (parent.positions[key][0], parent.positions[key][1], position[2])
            parent.value[key] = value
        return None

    def merge(self, parent: _Collection, value: Any, event) -> None:
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(source, dict) for source in sources):
            raise self.refuse("not valid YAML: expected a mapping or list of mappings for merging", event)
        parent.merges.append(sources)


def _merged(merges: list[list[dict]], own: dict) -> dict:
    """A mapping with ``<<:`` merges, as YAML has it: its own keys win, then the merged
    mappings in the order written."""
    result: dict = {}
    for sources in merges:
        for source in reversed(sources):
            result.update(source)
    result.update(own)
    return result


def _position(event, inner: dict | None) -> Pos:
    return event.start_mark.line + 1, event.start_mark.column + 1, inner


def _tag_message(tag: str) -> str:
    return (f"the tag {tag.replace(_CORE, '!!')} is not allowed: a workflow holds plain values only "
            "(text, numbers, booleans, null, lists, mappings)")
