"""Steps that workers cannot import by name, turned into source that can be shipped to them.

A function defined in a notebook cell (or in the script run as ``__main__``) lives in no
module a worker could import. Its step is shipped instead: one small module made of the
function's own source and what it uses from the notebook, found by name:

- modules it uses become ``import`` statements, objects imported from a module ``from ...
  import`` statements;
- functions and classes defined in the notebook come with their source, recursively;
- plain constants (numbers, strings, and lists, tuples, dicts and sets of them) are written
  as literals;
- anything else (a DataFrame built in a cell, an open file) cannot travel as code, and the
  error says so and what to do instead.

The step's own decorator is left out and its reference defaults (``x=item.x``) become
``None``: the engine passes those arguments. The module is normalised (``ast.unparse``), so
its digest, which names it, does not change with comments or formatting.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import linecache
import symtable
import sys
import textwrap
import types
from typing import Any

from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.vocab.imports import shipped_module

_LITERALS = (int, float, complex, str, bytes, bool, type(None))


def must_ship(fn: Any) -> bool:
    """Whether a step function has to be shipped: it lives in ``__main__``."""
    return getattr(fn, "__module__", None) == "__main__"


def interactive(fn: Any) -> bool:
    """Whether a function was defined at an interactive prompt or in a notebook cell."""
    return must_ship(fn) and not hasattr(sys.modules.get("__main__"), "__file__")


def ship(fn, step: str, *, references: tuple[type, ...], builders: tuple[type, ...]) -> tuple[str, str]:
    """(``uses``, module source) of a step whose function must be shipped. ``references``
    are the types of defaults the engine fills in; ``builders`` the types whose ``.step(...)``
    decorates a step."""
    module = _Module(step, fn.__globals__, references, builders)
    module.add(fn.__name__, fn, is_step=True)
    source = module.source()
    digest = "sha256:" + hashlib.sha256(source.encode("utf-8")).hexdigest()
    return f"{shipped_module(digest)}:{fn.__name__}", source


class _Module:
    def __init__(self, step: str, namespace: dict, references: tuple, builders: tuple):
        self.step = step
        self.namespace = namespace
        self.references = references
        self.builders = builders
        self.imports: set[str] = set()
        self.constants: dict[str, str] = {}
        self.definitions: list[str] = []  # what a definition uses comes before it
        self.seen: set[str] = set()

    def source(self) -> str:
        parts = sorted(self.imports) + [self.constants[n] for n in sorted(self.constants)] + self.definitions
        return ast.unparse(ast.parse("\n".join(parts))) + "\n"

    def add(self, name: str, value: Any, is_step: bool = False) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        if isinstance(value, self.references) and hasattr(value, "__wrapped__"):
            value = value.__wrapped__  # another step's function, used as a plain function
        if isinstance(value, types.ModuleType):
            self.imports.add(_import_module(value.__name__, name))
        elif _defined_here(value):
            self._define(name, value, is_step)
        elif _importable(value, name):
            alias = f" as {name}" if name != value.__qualname__ else ""
            self.imports.add(f"from {value.__module__} import {value.__qualname__}{alias}")
        elif _is_literal(value):
            self.constants[name] = f"{name} = {value!r}"
        else:
            raise self._error(
                f"uses {name!r}, a {type(value).__module__}.{type(value).__qualname__} made in the "
                "notebook, which cannot be shipped to the workers as code: pass it as a parameter, "
                "return it from a step, or build it inside the step"
            )

    def _define(self, name: str, value: Any, is_step: bool) -> None:
        if getattr(getattr(value, "__code__", None), "co_freevars", ()):
            raise self._error(f"{value.__qualname__} uses variables of an enclosing function; define it at top level")
        node = _definition(value, self._error)
        if is_step:
            node = self._as_step(node, value)
        text = ast.unparse(node)
        for used in sorted(_global_names(text) - {node.name}):
            if used in self.namespace:  # a name it does not define fails when run, as in Python
                self.add(used, self.namespace[used])
        self.definitions.append(text)
        if node.name != name:
            self.definitions.append(f"{name} = {node.name}")

    def _as_step(self, node: ast.FunctionDef, fn) -> ast.FunctionDef:
        """The step's definition without its step decorator, reference defaults as None."""
        node.decorator_list = [d for d in node.decorator_list if not self._declares_step(d)]
        positional = fn.__defaults__ or ()
        node.args.defaults = [
            ast.Constant(None) if isinstance(value, self.references) else default
            for default, value in zip(node.args.defaults, positional, strict=False)
        ]
        keyword = fn.__kwdefaults__ or {}
        node.args.kw_defaults = [
            ast.Constant(None)
            if default is not None and isinstance(keyword.get(arg.arg), self.references)
            else default
            for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
        ]
        return node

    def _declares_step(self, decorator: ast.expr) -> bool:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        return (
            isinstance(call, ast.Attribute)
            and call.attr == "step"
            and isinstance(call.value, ast.Name)
            and isinstance(self.namespace.get(call.value.id), self.builders)
        )

    def _error(self, message: str) -> SpecError:
        return SpecError(SpecIssue(f"step {self.step!r} {message}", field=f"steps.{self.step}"))


def _import_module(module: str, name: str) -> str:
    if module == name or (module.startswith(name + ".") and name == module.split(".")[0]):
        return f"import {module}"
    return f"import {module} as {name}"


def _defined_here(value: Any) -> bool:
    return (inspect.isfunction(value) or inspect.isclass(value)) and must_ship(value)


def _importable(value: Any, name: str) -> bool:
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not module or not qualname or "." in qualname or module == "__main__":
        return False
    return getattr(sys.modules.get(module), qualname, None) is value


def _is_literal(value: Any) -> bool:
    if not _plain(value):
        return False
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError):
        return False


def _plain(value: Any) -> bool:
    if type(value) in _LITERALS:
        return True
    if type(value) in (list, tuple, set):
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def _definition(value: Any, error) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef:
    text = _source(value)
    if text is None:
        raise error(
            f"uses {value.__qualname__}, whose source cannot be found (defined at a prompt?): "
            "define it in a notebook cell, a script, or a module"
        )
    tree = ast.parse(textwrap.dedent(text))
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or node.name != value.__name__:
        raise error(f"uses {value.__qualname__}, which is not defined by a def or class statement")
    return node


def _source(value: Any) -> str | None:
    try:
        return inspect.getsource(value)
    except (OSError, TypeError):
        pass
    if inspect.isclass(value):  # classes of a notebook: found through their cell
        return _class_source(value)
    return None


def _class_source(cls: type) -> str | None:
    for member in vars(cls).values():
        member = getattr(member, "__func__", getattr(member, "fget", member))
        code = getattr(member, "__code__", None)
        if code is None or not linecache.getlines(code.co_filename):
            continue
        found = _class_in("".join(linecache.getlines(code.co_filename)), cls.__name__, code.co_firstlineno)
        if found:
            return found
    # No method of its own (a dataclass, say): the last notebook input that defined it.
    for text in reversed(getattr(sys.modules.get("__main__"), "In", None) or []):
        found = _class_in(text, cls.__name__)
        if found:
            return found
    return None


def _class_in(text: str, name: str, line: int | None = None) -> str | None:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        inside = line is None or node.lineno <= line <= (node.end_lineno or node.lineno)
        if isinstance(node, ast.ClassDef) and node.name == name and inside:
            return _with_decorators(text, node)
    return None


def _with_decorators(text: str, node: ast.ClassDef) -> str:
    first = min([d.lineno for d in node.decorator_list] + [node.lineno])
    lines = text.splitlines(True)
    return "".join(lines[first - 1 : node.end_lineno])


def _global_names(text: str) -> set[str]:
    """The names a definition uses from its module: referenced and not bound inside it."""
    top = symtable.symtable(text, "<shipped>", "exec")
    found = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        found |= {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
        stack += table.get_children()
    return found
