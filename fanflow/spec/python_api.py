"""The Python front end: a workflow written as decorated functions.

    from fanflow import flow, item, params

    wf = flow("squares", params={"n": 4})

    @wf.step()
    def numbers(n: int = params.n) -> list[int]:
        return list(range(n))

    @wf.step(fan_out={"x": numbers.output})
    def square(x: int = item.x) -> int:
        return x * x

    @wf.step()
    def total(values: list[int] = square.all()) -> int:
        return sum(values)

A parameter whose default is a reference (``params.n``, ``item.x``, ``numbers.output``,
``square.all()``) becomes an entry of the step's ``with``; the decorated function itself is
the step's ``uses``. ``wf.spec()`` builds the same validated Workflow that the equivalent YAML
file gives.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from fanflow.spec import shipping
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Workflow
from fanflow.spec.positions import Positions
from fanflow.spec.validate import shadows_stdlib
from fanflow.vocab.imports import shipped_digest


class RefExpr:
    """A reference built in Python; ``str()`` gives its ``${...}`` form."""

    __slots__ = ("_text",)

    def __init__(self, text: str):
        self._text = text

    def __getattr__(self, name: str) -> RefExpr:
        if name.startswith("__"):
            raise AttributeError(name)
        return RefExpr(f"{self._text}.{name}")

    def __getitem__(self, key: str | int) -> RefExpr:
        return RefExpr(f"{self._text}[{key}]" if isinstance(key, int) else f"{self._text}.{key}")

    def __str__(self) -> str:
        return "${" + self._text + "}"

    def __repr__(self) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RefExpr) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


params = RefExpr("params")
item = RefExpr("item")


def _plain(value: Any) -> Any:
    """Turn references and step handles inside a value into their ``${...}`` text."""
    if isinstance(value, RefExpr):
        return str(value)
    if isinstance(value, StepHandle):
        return str(value.output)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class StepHandle:
    """What ``@wf.step()`` returns: still callable as the plain function, and a source of
    references to the step's output for the steps that follow."""

    def __init__(self, fn, name: str, options: dict[str, Any]):
        self.fn = fn  # None for a step that uses a workflow
        self.name = name
        self.options = options
        if fn is not None:
            self.__doc__ = fn.__doc__
            self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def output(self) -> RefExpr:
        return RefExpr(self.name)

    def all(self) -> RefExpr:
        """The outputs of every branch of this fanned-out step, in declared order."""
        return RefExpr(f"{self.name}[*]")

    def __getitem__(self, key):
        return self.output[key]


def _redefined(earlier, fn) -> bool:
    """Whether a step's function is defined again by running its notebook cell again."""
    return (
        earlier is not None
        and shipping.interactive(fn)
        and shipping.interactive(earlier)
        and earlier.__qualname__ == fn.__qualname__
    )


class FlowBuilder:
    def __init__(self, name: str, *, params: dict[str, Any] | None = None, **options: Any):
        self.name = name
        self.params = params or {}
        self.options = options
        self.steps: dict[str, StepHandle] = {}
        self.source: str | None = None
        self._shipped: dict[str, str] = {}  # uses -> source of the steps shipped as code

    def step(self, name: str | None = None, **options: Any):
        """Declare the decorated function as a step. Options are the Step fields
        (``fan_out``, ``retries``, ``timeout``, ``resources``, ``when``, ``needs``, ...);
        ``with_`` adds arguments beyond those the signature's defaults give."""

        def decorate(fn) -> StepHandle:
            step_name = name or fn.__name__
            earlier = self.steps.get(step_name)
            if earlier is not None and not _redefined(earlier.fn, fn):
                raise SpecError(
                    SpecIssue(
                        f"a second step named {step_name!r}",
                        field=f"steps.{step_name}",
                        file=inspect.getsourcefile(fn),
                        line=inspect.getsourcelines(fn)[1],
                    )
                )
            handle = StepHandle(fn, step_name, options)
            self.steps[step_name] = handle  # a cell run again replaces its step, in place
            if self.source is None and not shipping.interactive(fn):
                self.source = inspect.getsourcefile(fn)
            return handle

        return decorate

    def use(self, name: str, workflow: str, **options: Any) -> StepHandle:
        """A step that runs another workflow (a file relative to this one, or
        ``workflow:NAME`` for an installed one); ``with_`` gives its parameters."""
        if name in self.steps:
            raise SpecError(
                SpecIssue(f"a second step named {name!r}", field=f"steps.{name}", file=self.source)
            )
        handle = StepHandle(None, name, {**options, "uses": workflow})
        self.steps[name] = handle
        return handle

    def to_dict(self) -> dict[str, Any]:
        steps = {}
        for step_name, handle in self.steps.items():
            options = dict(handle.options)
            arguments = {k: _plain(v) for k, v in options.pop("with_", {}).items()}
            if handle.fn is None:  # a sub-workflow
                entry = {"uses": options.pop("uses"), **({"with": arguments} if arguments else {})}
                for key, value in options.items():
                    entry[key] = (
                        [v.name if isinstance(v, StepHandle) else v for v in value]
                        if key == "needs"
                        else _plain(value)
                    )
                steps[step_name] = entry
                continue
            for parameter in inspect.signature(handle.fn).parameters.values():
                if isinstance(parameter.default, RefExpr | StepHandle):
                    arguments.setdefault(parameter.name, _plain(parameter.default))
            entry: dict[str, Any] = {"uses": self._uses(handle)}
            if arguments:
                entry["with"] = arguments
            for key, value in options.items():
                if key == "needs":
                    value = [v.name if isinstance(v, StepHandle) else v for v in value]
                entry[key] = _plain(value)
            steps[step_name] = entry
        return {"name": self.name, "params": dict(self.params), **_plain(self.options), "steps": steps}

    def _uses(self, handle: StepHandle) -> str:
        fn = handle.fn
        if not shipping.must_ship(fn):
            return f"{fn.__module__}:{fn.__qualname__}"
        uses, source = shipping.ship(fn, handle.name, references=(RefExpr, StepHandle), builders=(FlowBuilder,))
        self._shipped[uses] = source
        return uses

    def spec(self, *, check_imports: bool = True, _stack: tuple[str, ...] = ()) -> Workflow:
        from fanflow.spec.loader import workflow_from_dict

        self._shipped: dict[str, str] = {}
        data = self.to_dict()
        # Shipped steps import the modules beside the notebook (or script), from its folder.
        folders = [os.getcwd()] if self._shipped and self.source is None else []
        workflow = workflow_from_dict(data, source=self.source, positions=self._positions(),
                                      check_imports=check_imports, import_paths=folders, _stack=_stack)
        if not self._shipped:
            return workflow
        code = {shipped_digest(uses): source for uses, source in self._shipped.items()}
        return workflow.model_copy(update={"code": code})

    def _positions(self) -> Positions:
        table = {}
        for step_name, handle in self.steps.items():
            if handle.fn is None:
                continue
            try:
                line = inspect.getsourcelines(handle.fn)[1]
            except (OSError, TypeError):
                continue
            table[("steps", step_name)] = (line, 1)
        return Positions(table, self.source)


def flow(name: str, *, params: dict[str, Any] | None = None, **options: Any) -> FlowBuilder:
    """Start a workflow written in Python; see the module's documentation."""
    return FlowBuilder(name, params=params, **options)


def load_python_workflow(path: Path, *, check_imports: bool = True, _stack: tuple[str, ...] = ()) -> Workflow:
    """Import a Python workflow file (its folder on the import path) and build its spec."""
    path = Path(path).resolve()
    shadowed = shadows_stdlib(path.stem)
    if shadowed:
        raise SpecError(SpecIssue(shadowed, file=str(path), line=1, column=1))
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(path.stem)
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() != path:
            module = importlib.reload(module)
    except SpecError:
        raise
    except SystemExit as exc:  # sys.exit() at import: that is not a workflow, whatever the code
        raise SpecError(
            SpecIssue(
                f"the workflow file exited while being imported (sys.exit({exc.code!r})); a workflow "
                "file defines its workflow and leaves running it to fanflow (guard scripts with "
                "`if __name__ == '__main__':`)",
                file=str(path),
                line=_error_line(exc, path),
            )
        ) from None
    except Exception as exc:  # the user's module failed to import: say where, not a traceback
        raise SpecError(
            SpecIssue(
                f"importing the workflow failed: {type(exc).__name__}: {exc}",
                file=str(path),
                line=_error_line(exc, path),
            )
        ) from None
    builders = [v for v in vars(module).values() if isinstance(v, FlowBuilder)]
    if len(builders) != 1:
        found = "no" if not builders else f"{len(builders)}"
        raise SpecError(
            SpecIssue(f"expected one workflow made with fanflow.flow(...), found {found}", file=str(path))
        )
    builders[0].source = str(path)
    return builders[0].spec(check_imports=check_imports, _stack=_stack or (str(path),))


def _error_line(exc: BaseException, path: Path) -> int | None:
    if isinstance(exc, SyntaxError):
        return exc.lineno
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
