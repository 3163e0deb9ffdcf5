"""What Argo Workflows does with parameters, reproduced for the versions fanflow supports.

Each rule says which file of argoproj/argo-workflows it follows and at which tags it was
read; where a rule changed between versions, ``ArgoVersion`` says from which release. The
facts were read from the source, the code is ours: only what fanflow's manifests (and the
tests that show why they are built as they are) need is reproduced, and anything else
raises ``Unsupported`` rather than guessing.

- Template substitution (``{{...}}``): util/template/{template,simple_template,replace}.go
  (v3.4.18 to v4.1.2): a tag's value is written through Go's ``strconv.Quote`` (quotes
  stripped) into the JSON text of the object being substituted, which must then parse.
  From v3.7.11 and v4.0.2 a missing ``tasks.*``/``steps.*`` reference requeues the
  workflow instead of failing (workflow/controller/dag.go, resolveDependencyReferences);
  from v3.7.12 and v4.0.3 a task's ``when`` is resolved first, so a task that will not run
  is never requeued for it.
- Loop items: pkg/apis/workflow/v1alpha1/item.go (``Item.String``, ``GetType``),
  workflow/controller/operator.go (``processItem``, ``expandSequence``,
  ``generateNodeName``), workflow/controller/dag.go (``expandTask``), v3.4.18 to v4.1.2.
- Aggregated outputs of a looped task: workflow/controller/operator.go
  (``processAggregateNodeOutputs``; ``aggregatedJsonValueList`` from v3.5.11): only
  succeeded branches, in loop-index order; a list of the values as strings, or, from
  v3.5.11, when every value is a JSON object or list, the decoded values re-encoded by Go.
- Output parameters: workflow/executor/executor.go (``SaveParameters``): the file's text
  less one trailing newline; the default when the file is missing.
- ``depends``: workflow/common/ancestry.go (``expandDependency``) and
  workflow/controller/dag.go (``evaluateDependsLogic``, task groups' phases).
- ``when``: workflow/controller/steps.go (``shouldExecute``, govaluate, bare words become
  strings).
- Retries: workflow/controller/operator.go (``processNodeRetries``: wait duration ×
  factor^(retries), capped by ``backoff.cap`` from v3.7.0; ``retryStrategy.expression`` with
  ``lastRetry.exitCode``; ``{{retries}}``).
- Kubernetes expands ``$(VAR)`` and ``$$`` in a container's args
  (kubernetes/third_party/forked/golang/expansion).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class Unsupported(Exception):
    """Something Argo does that this reproduction does not cover."""


class TemplateError(Exception):
    """Argo refuses the substitution (the node errors)."""


class MissingVariable(TemplateError):
    """A ``tasks.*``/``steps.*`` reference that does not resolve where Argo requeues."""


@dataclass(frozen=True, order=True)
class ArgoVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> ArgoVersion:
        major, minor, patch = (int(p) for p in text.lstrip("v").split("."))
        return cls(major, minor, patch)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def t(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def decodes_aggregates(self) -> bool:
        return self.t >= (3, 5, 11)

    @property
    def strict_references(self) -> bool:
        return (3, 7, 11) <= self.t < (4, 0, 0) or self.t >= (4, 0, 2)

    @property
    def resolves_when_first(self) -> bool:
        return (3, 7, 12) <= self.t < (4, 0, 0) or self.t >= (4, 0, 3)

    @property
    def backoff_cap(self) -> bool:
        return self.t >= (3, 7, 0)


# One release for each set of rules above, oldest to newest.
VERSIONS = tuple(
    ArgoVersion.parse(v)
    for v in ("v3.4.18", "v3.5.10", "v3.5.11", "v3.6.19", "v3.7.10", "v3.7.11", "v3.7.18", "v4.0.2", "v4.1.2")
)


# -- Go's text encodings ----------------------------------------------------------------------


def _go_printable(ch: str) -> bool:
    if " " <= ch <= "~":
        return True
    return ord(ch) > 0x7F and unicodedata.category(ch)[0] in "LMNPS"


_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: Go escapes for what is not printable (``\\x01`` is not JSON)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif _go_printable(ch):
            out.append(ch)
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _go_float(value: float) -> str:
    """encoding/json's float64 text: shortest digits, no exponent from 1e-6 to 1e21."""
    if not math.isfinite(value):
        raise TemplateError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        return format(Decimal(repr(value)).normalize(), "f")
    return re.sub(r"e-0(\d)$", r"e-\1", repr(value))  # Python's repr has Go's digits here


def _go_string(text: str) -> str:
    """encoding/json's string: HTML characters and U+2028/U+2029 escaped as well."""
    body = json.dumps(text, ensure_ascii=False)[1:-1]
    for ch, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        body = body.replace(ch, escaped)
    return f'"{body}"'


def go_json(value: Any) -> str:
    """Go's ``json.Marshal`` of values JSON decoded into ``interface{}``: objects with sorted
    keys, every number a float64."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _go_float(float(value))
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_string(k)}:{go_json(value[k])}" for k in sorted(value)) + "}"
    raise Unsupported(f"go_json of {type(value).__name__}")


def go_compact(raw: str) -> str:
    """``json.Marshal`` of a ``json.RawMessage``: whitespace outside strings dropped, ``<``,
    ``>``, ``&``, U+2028 and U+2029 escaped; every other byte as it was."""
    out, in_string, escape = [], False, False
    for ch in raw:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            out.append(
                {
                    "<": "\\u003c",
                    ">": "\\u003e",
                    "&": "\\u0026",
                    "\u2028": "\\u2028",
                    "\u2029": "\\u2029",
                }.get(ch, ch)
            )
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch not in " \t\r\n":
            out.append(ch)
    return "".join(out)


def _unfix(text: str) -> str:
    """util/json Fix: ``\\u003c``, ``\\u003e`` and ``\\u0026`` back to ``<``, ``>``, ``&``."""
    return text.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")


# -- template substitution --------------------------------------------------------------------


def replace(
    text: str,
    values: dict[str, str],
    *,
    allow_unresolved: bool = True,
    strict_prefixes: tuple[str, ...] = (),
    seen: list[tuple[str, str]] | None = None,
) -> str:
    """Substitute ``{{tag}}`` in the JSON text of an object, as Argo does; ``seen`` collects
    (tag, value) for every substitution made."""
    out, pos = [], 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            out.append(text[pos:])
            break
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"cannot find end tag in {text[start : start + 40]!r}")
        out.append(text[pos:start])
        tag = text[start + 2 : end]
        if tag.startswith("="):
            raise Unsupported(f"expression template {{{{{tag}}}}}")
        key = tag.strip()
        if key in values:
            out.append(go_quote(values[key])[1:-1])
            if seen is not None:
                seen.append((key, values[key]))
        elif any(key == p or key.startswith(p + ".") for p in strict_prefixes):
            raise MissingVariable(f"failed to resolve {{{{{tag}}}}}")
        elif allow_unresolved:
            out.append("{{" + tag + "}}")
        else:
            raise TemplateError(f"failed to resolve {{{{{tag}}}}}")
        pos = end + 2
    result = "".join(out)
    try:
        json.loads(result)
    except ValueError:
        raise TemplateError(
            "cannot finish template replacement because the result was invalid JSON"
        ) from None
    return result


def substitute(obj: Any, values: dict[str, str], **options: Any) -> Any:
    """``replace`` over an object, through its JSON text (as Go marshals it)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return json.loads(replace(text, values, **options))


# -- loop items -------------------------------------------------------------------------------


def split_list(text: str) -> list[str]:
    """The raw JSON of each element of a JSON list (``json.Unmarshal`` into ``[]Item``)."""
    decoder = json.JSONDecoder()
    text = text.strip()
    if not text.startswith("["):
        raise TemplateError(f"withParam value could not be parsed as a JSON list: {text[:60]}")
    elements, pos = [], 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos < len(text) and text[pos] == "]":
            return elements
        try:
            _, end = decoder.raw_decode(text, pos)
        except ValueError as exc:
            raise TemplateError(f"withParam value could not be parsed as a JSON list: {exc}") from None
        elements.append(text[pos:end])
        pos = end


def item_type(raw: str) -> str:
    """``Item.GetType``: number, bool, list, map or string, tried in that order on the raw text."""
    if re.fullmatch(r"[+-]?\d+", raw) or _parses_float(raw):
        return "number"
    if raw in ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"):
        return "bool"
    value = json.loads(raw)
    if value is None or isinstance(value, list):  # null unmarshals into a list without error
        return "list"
    if isinstance(value, dict):
        return "map"
    return "string"


def _parses_float(raw: str) -> bool:
    return bool(re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", raw, re.I))


def item_text(raw: str) -> str:
    """``Item.String``: the compacted raw JSON, with a string's quotes stripped (its escapes
    stay: a string item holding ``"`` arrives as ``\\"``)."""
    text = go_compact(raw)
    if text.startswith('"'):
        return _unfix(text[1:-1])
    return _unfix(text)


def item_values(raw: str) -> tuple[dict[str, str], str]:
    """``processItem``: what ``{{item}}`` (and ``{{item.KEY}}``) become, and the node name's
    description (parentheses removed, as ``generateNodeName`` does)."""
    kind = item_type(raw)
    if kind in ("number", "bool", "string"):
        values, desc = {"item": item_text(raw)}, item_text(raw)
    elif kind == "map":
        members = split_object(raw)
        values = {f"item.{k}": item_text(v) for k, v in members.items()}
        values["item"] = (
            "{" + ",".join(f"{_go_string(k)}:{go_compact(members[k])}" for k in sorted(members)) + "}"
        )
        desc = ",".join(sorted(f"{k}:{item_text(v)}" for k, v in members.items()))
    else:
        elements = [] if raw.strip() == "null" else split_list(raw)
        values = {
            "item": "null" if raw.strip() == "null" else "[" + ",".join(map(go_compact, elements)) + "]"
        }
        desc = "[" + " ".join(map(item_text, elements)) + "]"
    return values, desc.replace("(", "").replace(")", "")


def split_object(raw: str) -> dict[str, str]:
    """The raw JSON of each member of a JSON object (``json.Unmarshal`` into ``map[string]Item``)."""
    decoder, members, text = json.JSONDecoder(), {}, raw.strip()
    pos = 1
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "}":
            return members
        key, pos = decoder.raw_decode(text, pos)
        while text[pos] in " \t\r\n:":
            pos += 1
        _, end = decoder.raw_decode(text, pos)
        members[key] = text[pos:end]
        pos = end


def sequence(
    count: str | None = None, start: str | None = None, end: str | None = None, fmt: str | None = None
) -> list[str]:
    """``expandSequence``: the raw items (JSON strings) of a withSequence."""
    try:
        first = int(start) if start is not None else 0
        if end is not None:
            last = int(end)
        elif count is not None:
            n = int(count)
            if n == 0:
                return []
            last = first + n - 1
        else:
            raise TemplateError("neither end nor count was specified in withSequence")
    except ValueError as exc:
        raise TemplateError(f"withSequence: {exc}") from None
    if fmt:
        raise Unsupported("withSequence.format")
    step = 1 if first <= last else -1
    return [json.dumps(str(i)) for i in range(first, last + step, step)]


def node_name(task: str, index: int, desc: str) -> str:
    return f"{task}({index}:{desc})"


# -- aggregated outputs -----------------------------------------------------------------------


def aggregate(values: list[str], version: ArgoVersion) -> str:
    """The JSON list Argo makes of one output parameter of a looped task's succeeded branches
    (in loop-index order)."""
    if version.decodes_aggregates:
        decoded = []
        for value in values:
            try:
                item = json.loads(value)
            except ValueError:
                break
            if not isinstance(item, list | dict):
                break
            decoded.append(item)
        else:
            return "null" if not values else go_json(decoded)
    return "[" + ",".join(_go_string(v) for v in values) + "]"


def output_value(text: str | None, default: str | None) -> str | None:
    """An output parameter read from its file (None when neither file nor default exists)."""
    value = text if text is not None else default
    return None if value is None else value.removesuffix("\n")


# -- depends and when -------------------------------------------------------------------------

RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")
_TOKEN = re.compile(r"\s*(\|\||&&|!=|==|<=|>=|[()!<>-]|'[^']*'|\"[^\"]*\"|[A-Za-z0-9_.-]+)")


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise TemplateError(f"cannot parse {text!r} at {pos}")
        tokens.append(match.group(1))
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return tokens


class _Parser:
    """Boolean expressions of ``||``, ``&&``, ``!``, parentheses and comparisons."""

    def __init__(self, tokens: list[str], atom):
        self.tokens, self.pos, self.atom = tokens, 0, atom

    def parse(self):
        value = self._or()
        if self.pos != len(self.tokens):
            raise TemplateError(f"unexpected {self.tokens[self.pos]!r}")
        return value

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self):
        value = self._and()
        while self._peek() == "||":
            self.pos += 1
            right = self._and()
            value = value or right
        return value

    def _and(self):
        value = self._compare()
        while self._peek() == "&&":
            self.pos += 1
            right = self._compare()
            value = value and right
        return value

    def _compare(self):
        left = self._unary()
        op = self._peek()
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self.pos += 1
            right = self._unary()
            return (
                {"==": left == right, "!=": left != right}.get(op)
                if op in ("==", "!=")
                else {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
            )
        return left

    def _unary(self):
        token = self._peek()
        if token == "!":
            self.pos += 1
            return not self._unary()
        if token == "-":
            self.pos += 1
            return -self._unary()
        if token == "(":
            self.pos += 1
            value = self._or()
            if self._peek() != ")":
                raise TemplateError("missing )")
            self.pos += 1
            return value
        self.pos += 1
        return self.atom(token)


def evaluate_depends(depends: str, results: dict[str, dict[str, bool]]) -> bool:
    """A ``depends`` expression over the results of finished tasks (``results[task]``); a
    bare task name means ``(T.Succeeded || T.Skipped || T.Daemoned)``."""

    def atom(token: str) -> bool:
        task, _, result = token.partition(".")
        if not result:
            r = results[task]
            return r["Succeeded"] or r["Skipped"] or r["Daemoned"]
        if result not in RESULTS:
            raise TemplateError(f"task result '{result}' for task '{task}' is invalid")
        return results[task][result]

    return bool(_Parser(_tokens(depends), atom).parse())


def depends_tasks(depends: str) -> list[str]:
    """The tasks a ``depends`` expression names."""
    return sorted({t.partition(".")[0] for t in _tokens(depends) if t not in ("||", "&&", "!", "(", ")")})


def should_execute(when: str | None) -> bool:
    """``shouldExecute``: govaluate over the substituted ``when``; bare words are strings."""
    if not when:
        return True

    def atom(token: str):
        if token in ("true", "false"):
            return token == "true"
        if token[0] in "'\"":
            return token[1:-1]
        try:
            return float(token)
        except ValueError:
            return token

    result = _Parser(_tokens(when), atom).parse()
    if not isinstance(result, bool):
        raise TemplateError(f"Expected boolean evaluation for '{when}'. Got {result}")
    return result


def retry_allowed(expression: str | None, last_exit_code: int) -> bool:
    """``retryStrategy.expression`` of the form ``asInt(lastRetry.exitCode) OP N``."""
    if not expression:
        return True
    match = re.fullmatch(r"\s*asInt\(lastRetry\.exitCode\)\s*(==|!=|<=|>=|<|>)\s*(-?\d+)\s*", expression)
    if not match:
        raise Unsupported(f"retryStrategy.expression {expression!r}")
    op, n = match.group(1), int(match.group(2))
    return {
        "==": last_exit_code == n,
        "!=": last_exit_code != n,
        "<": last_exit_code < n,
        "<=": last_exit_code <= n,
        ">": last_exit_code > n,
        ">=": last_exit_code >= n,
    }[op]


def backoff_wait(
    duration_s: float, factor: int, retries_so_far: int, cap_s: float | None, version: ArgoVersion
) -> float:
    """Seconds Argo waits before the next attempt (``cap`` only from v3.7.0)."""
    wait = duration_s * factor**retries_so_far
    return min(wait, cap_s) if cap_s is not None and version.backoff_cap else wait


def kubernetes_expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of a container argument: ``$(VAR)`` with VAR's value when
    defined, ``$$`` as ``$``."""
    out, i = [], 0
    while i < len(arg):
        if arg[i] == "$" and i + 1 < len(arg):
            if arg[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if arg[i + 1] == "(":
                close = arg.find(")", i + 2)
                if close > 0 and arg[i + 2 : close] in env:
                    out.append(env[arg[i + 2 : close]])
                    i = close + 1
                    continue
        out.append(arg[i])
        i += 1
    return "".join(out)
