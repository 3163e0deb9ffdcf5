"""``when`` conditions: a small safe expression language over references.

``${params.serve} and ${params.top_k} > 1`` — references stand for their values; the rest is
Python expression syntax limited to literals, comparisons, ``and``/``or``/``not``, ``in``,
arithmetic and ``len``. Evaluated by simpleeval, never by ``eval``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from fanflow.spec.refs import Ref, parse_ref

_REF = re.compile(r"(?<!\$)\$\{([^{}]*)\}")
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Mod,
    ast.FloorDiv,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.List,
    ast.Tuple,
    ast.Call,
    ast.IfExp,
)


def placeholders(expression: str) -> tuple[str, dict[str, Ref]]:
    """The expression with each reference replaced by a variable name, and those names."""
    names: dict[str, Ref] = {}

    def swap(match: re.Match) -> str:
        name = f"_ref{len(names)}"
        names[name] = parse_ref(match.group(1))
        return name

    return _REF.sub(swap, expression), names


def syntax_problem(expression: str) -> str | None:
    text, names = placeholders(expression)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        return f"not a valid condition: {exc.msg}"
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            return f"not allowed in a condition: {type(node).__name__}"
        if (
            isinstance(node, ast.Name)
            and node.id not in names
            and node.id not in ("true", "false", "null", "len")
        ):
            return f"unknown name {node.id!r}: refer to values as ${{params.x}} or ${{step.field}}"
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id == "len"):
            return "the only function allowed in a condition is len()"
    return None


def evaluate(expression: str | bool | None, lookup) -> bool:
    """Evaluate a condition; ``lookup(ref)`` gives each reference's value."""
    if expression is None:
        return True
    if isinstance(expression, bool):
        return expression
    from simpleeval import SimpleEval

    text, names = placeholders(expression)
    values: dict[str, Any] = {name: lookup(ref) for name, ref in names.items()}
    values.update(true=True, false=False, null=None)
    return bool(SimpleEval(names=values, functions={"len": len}).eval(text))
