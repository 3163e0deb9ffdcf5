"""Where each key and value of a YAML document stands, for errors that name the line."""

from __future__ import annotations

from typing import Any

import yaml

from fanflow.spec.errors import SpecError, SpecIssue

Path = tuple  # keys (str) and list indexes (int)


class Positions:
    """Maps a path inside the document to its 1-based (line, column)."""

    def __init__(self, table: dict[Path, tuple[int, int]] | None = None, file: str | None = None):
        self.table = table or {}
        self.file = file

    def locate(self, path: Path) -> tuple[int | None, int | None]:
        """The position of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.table:
                return self.table[path]
            path = path[:-1]
        return self.table.get((), (None, None))

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
    """Parse YAML safely and record positions; duplicate keys are an error (YAML itself would
    silently keep the last one, hiding a second step of the same name)."""
    try:
        loader = _FastLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError:
        data = None
    else:
        return _checked(node, data, text, file)
    # Not valid YAML: the pure-Python parser says where and what, in its own words.
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise SpecError(
            SpecIssue(f"not valid YAML: {problem}", file=file, line=line, column=column)
        ) from None
    return _checked(node, yaml.load(text, Loader=yaml.SafeLoader) if node is not None else None, text, file)


# libyaml's safe loader when PyYAML has it (parsing in C, once for both the positions and the
# values), else the pure-Python one.
_FastLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _checked(node, data: Any, text: str, file: str | None) -> tuple[Any, Positions]:
    if node is None:
        raise SpecError(SpecIssue("the file is empty: expected a workflow with name and steps", file=file))
    table: dict[Path, tuple[int, int]] = {}
    issues: list[SpecIssue] = []
    _walk(node, (), table, issues, file)
    if issues:
        raise SpecError(issues)
    return data, Positions(table, file)


def _walk(node, path: Path, table, issues, file) -> None:
    table.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    SpecIssue(
                        f"duplicate key {key!r} (first at line {seen[key]})",
                        field=dotted((*path, key)),
                        file=file,
                        line=line,
                        column=key_node.start_mark.column + 1,
                    )
                )
                continue
            seen[key] = line
            table[(*path, key)] = (line, key_node.start_mark.column + 1)
            _walk(value_node, (*path, key), table, issues, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), table, issues, file)
