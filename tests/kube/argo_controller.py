"""A miniature Argo Workflows controller for tests: it runs an exported Workflow the way
Argo's controller would, with the rules of one Argo version (``argo_rules``), and real
``fanflow exec`` processes as its pods (``cluster``).

It covers what fanflow's manifests use, as Argo does it: a DAG with ``depends`` and
``when``; loops over ``withSequence``/``withParam``/``withItems``; steps templates
(sequential groups, ``parallelism``); container templates with input parameters, raw input
artifacts, output parameters read from files, ``retryStrategy`` and
``activeDeadlineSeconds``; resource templates that create and delete InferenceServices;
the exit handler. Anything else raises ``Unsupported``. A reference Argo cannot resolve
where it requeues the workflow leaves it ``Hung`` (Argo would requeue it forever).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.kube import argo_rules as rules
from tests.kube.cluster import Cluster

FULFILLED = {"Succeeded", "Failed", "Error", "Skipped", "Omitted"}


@dataclass
class Node:
    name: str
    phase: str
    kind: str = "Pod"
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    log: str = ""

    @property
    def failed(self) -> bool:
        return self.phase in ("Failed", "Error")


@dataclass
class Outcome:
    phase: str  # Succeeded, Failed, Error or Hung
    message: str
    nodes: dict[str, Node]
    substituted: list[tuple[str, str]]  # (tag, value) of every substitution Argo made
    waits: list[float]  # the backoff before each retry


class Hung(Exception):
    pass


class Controller:
    def __init__(
        self,
        manifest: dict,
        version: rules.ArgoVersion,
        cluster: Cluster,
        *,
        parameters: dict[str, str] | None = None,
        namespace: str = "ml",
        run_name: str | None = None,
    ):
        if manifest.get("kind") != "Workflow":
            raise rules.Unsupported(f"kind {manifest.get('kind')}")
        self.spec = manifest["spec"]
        self.version = version
        self.cluster = cluster
        self.templates = {t["name"]: t for t in self.spec["templates"]}
        base = manifest["metadata"]["generateName"]
        self.name = run_name or base + hashlib.sha256(base.encode()).hexdigest()[:5]
        self.globals = {"workflow.name": self.name, "workflow.namespace": namespace}
        self.globals.update(self._parameters(parameters or {}))
        self.nodes: dict[str, Node] = {}
        self.substituted: list[tuple[str, str]] = []
        self.waits: list[float] = []
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=256)

    def _parameters(self, given: dict[str, str]) -> dict[str, str]:
        values = {}
        declared = {p["name"]: p for p in self.spec.get("arguments", {}).get("parameters", [])}
        unknown = set(given) - set(declared)
        if unknown:
            raise rules.TemplateError(f"unknown parameters {sorted(unknown)}")
        for name, param in declared.items():
            value = given.get(name, param.get("value"))
            if value is None:
                raise rules.TemplateError(f"either value or valueFrom must be specified for {name}")
            if "enum" in param and value not in param["enum"]:
                raise rules.TemplateError(f"value {value!r} of {name} is not in the enum {param['enum']}")
            values[f"workflow.parameters.{name}"] = value
        return values

    # -- the workflow -------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            entry = self._execute(self.spec["entrypoint"], {}, self.name, {})
            phase, message = entry.phase, entry.message
        except Hung as exc:
            phase, message = "Hung", str(exc)
        finally:
            if "onExit" in self.spec:
                self._execute(self.spec["onExit"], {}, f"{self.name}.onExit", {})
            self._pool.shutdown(wait=False, cancel_futures=True)
        return Outcome(phase, message, self.nodes, self.substituted, self.waits)

    def _record(self, node: Node) -> Node:
        with self._lock:
            self.nodes[node.name] = node
        return node

    def _substitute(self, obj: Any, values: dict[str, str], **options: Any) -> Any:
        seen: list[tuple[str, str]] = []
        result = rules.substitute(obj, values, seen=seen, **options)
        with self._lock:
            self.substituted += seen
        return result

    # -- templates ----------------------------------------------------------------------
    def _execute(self, name: str, arguments: dict, node_name: str, local: dict[str, str]) -> Node:
        """``executeTemplate``: inputs from the arguments (or their defaults), globals then
        inputs substituted into the template (``ProcessArgs``/``SubstituteParams``)."""
        template = self.templates[name]
        try:
            inputs = self._inputs(template, arguments)
            template = self._substitute(template, {**self.globals, **local})
            template = self._substitute(template, {**self.globals, **local, **inputs})
        except rules.TemplateError as exc:
            return self._record(Node(node_name, "Error", message=str(exc)))
        if "container" in template:
            return self._retrying(template, node_name, inputs, arguments)
        if "dag" in template:
            return self._dag(template, node_name)
        if "steps" in template:
            return self._steps(template, node_name)
        if "resource" in template:
            return self._resource(template, node_name)
        raise rules.Unsupported(f"template {name}: {sorted(template)}")

    @staticmethod
    def _inputs(template: dict, arguments: dict) -> dict[str, str]:
        given = {p["name"]: p.get("value") for p in arguments.get("parameters", [])}
        values = {}
        for param in template.get("inputs", {}).get("parameters", []):
            value = given.get(param["name"], param.get("value"))
            if value is None:
                raise rules.TemplateError(f"inputs.parameters.{param['name']} was not supplied")
            values[f"inputs.parameters.{param['name']}"] = value
        return values

    def _retrying(self, template: dict, node_name: str, inputs: dict, arguments: dict) -> Node:
        strategy = template.get("retryStrategy")
        if strategy is None:
            return self._record(self._pod(template, node_name))
        limit = int(strategy.get("limit", 0))
        backoff = strategy.get("backoff", {})
        attempts = []
        for attempt in range(limit + 1):
            again = self._substitute(
                self.templates[template["name"]], {**self.globals, "retries": str(attempt)}
            )
            again = self._substitute(again, {**self.globals, **inputs})
            node = self._record(self._pod(again, f"{node_name}({attempt})"))
            attempts.append(node)
            exit_code = int(node.outputs.get("exitCode", "-1"))
            if node.phase == "Succeeded" or attempt == limit:
                break
            if not rules.retry_allowed(strategy.get("expression"), exit_code):
                break
            if backoff:
                cap = _seconds(backoff["cap"]) if "cap" in backoff else None
                self.waits.append(
                    rules.backoff_wait(
                        _seconds(backoff["duration"]),
                        int(backoff.get("factor", 1)),
                        attempt,
                        cap,
                        self.version,
                    )
                )
        last = attempts[-1]
        retry = Node(node_name, last.phase, "Retry", last.message, dict(last.outputs), attempts, last.log)
        return self._record(retry)

    def _pod(self, template: dict, node_name: str) -> Node:
        container = template["container"]
        files = {}
        for artifact in template.get("inputs", {}).get("artifacts", []):
            if "raw" not in artifact:
                raise rules.Unsupported(f"input artifact {artifact['name']} is not raw")
            files[artifact["path"]] = artifact["raw"].get("data", "")
        outputs = template.get("outputs", {}).get("parameters", [])
        for param in outputs:
            if "path" not in param.get("valueFrom", {}):
                raise rules.Unsupported(f"output parameter {param['name']} not from a file")
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        args = [rules.kubernetes_expand(a, env) for a in container.get("args", [])]
        deadline = template.get("activeDeadlineSeconds")
        result = self.cluster.run_pod(
            node_name,
            container["command"],
            args,
            files,
            [p["valueFrom"]["path"] for p in outputs],
            float(deadline) if deadline is not None else None,
        )
        node = Node(node_name, "Succeeded" if result.exit_code == 0 else "Failed", log=result.log)
        node.outputs["exitCode"] = str(result.exit_code)
        if result.exit_code:
            lines = [
                line for line in result.log.strip().splitlines() if line.startswith(("fanflow:", "error:"))
            ]
            node.message = lines[-1] if lines else f"Error (exit code {result.exit_code})"
        for param in outputs:
            value = rules.output_value(
                result.outputs[param["valueFrom"]["path"]], param["valueFrom"].get("default")
            )
            if value is None:
                node.phase, node.message = (
                    "Error",
                    f"open {param['valueFrom']['path']}: no such file or directory",
                )
            else:
                node.outputs[param["name"]] = value
        return node

    # -- loops --------------------------------------------------------------------------
    def _expand(self, task: dict) -> list[tuple[str, dict]] | None:
        """``expandTask``/``expandStepGroup``: (node suffix, task) per item; None: no loop."""
        if "withSequence" in task:
            seq = task["withSequence"]
            items = rules.sequence(seq.get("count"), seq.get("start"), seq.get("end"), seq.get("format"))
        elif "withParam" in task:
            items = rules.split_list(task["withParam"])
        elif "withItems" in task:
            items = [json.dumps(item) for item in task["withItems"]]
        else:
            return None
        body = {k: v for k, v in task.items() if k not in ("withSequence", "withParam", "withItems")}
        expanded = []
        for index, raw in enumerate(items):
            values, desc = rules.item_values(raw)
            child = self._substitute(body, values, allow_unresolved=False)
            expanded.append((rules.node_name(task["name"], index, desc), child))
        return expanded

    def _run_task(self, task: dict, node_name: str, gate: threading.Semaphore | None = None) -> Node:
        """A (DAG or steps) task once its references are resolved: its loop (each branch
        through ``gate``, a template's ``parallelism``), its ``when``."""
        try:
            expanded = self._expand(task)
        except rules.TemplateError as exc:
            if task.get("when") and not rules.should_execute(task["when"]):
                expanded = []  # a loop that cannot expand is skipped when it would not run
            else:
                return self._record(Node(node_name, "Error", message=str(exc)))
        if expanded is None:
            if not rules.should_execute(task.get("when")):
                return self._record(Node(node_name, "Skipped", "Skipped"))
            if gate is None:
                return self._execute(task["template"], task.get("arguments", {}), node_name, {})
            with gate:
                return self._execute(task["template"], task.get("arguments", {}), node_name, {})
        if not expanded:
            return self._record(Node(node_name, "Skipped", "Skipped", message="Skipped, empty params"))
        base = node_name.rsplit(".", 1)[0]
        futures = [
            self._pool.submit(self._run_task, child, f"{base}.{suffix}", gate) for suffix, child in expanded
        ]
        children = [f.result() for f in futures]
        phase = next((c.phase for c in reversed(children) if c.failed), "Succeeded")
        message = "; ".join(c.message for c in children if c.failed)
        return self._record(Node(node_name, phase, "TaskGroup", message, children=children))

    # -- DAG ----------------------------------------------------------------------------
    def _dag(self, template: dict, node_name: str) -> Node:
        tasks = {t["name"]: t for t in template["dag"]["tasks"]}
        done: dict[str, Node] = {}
        running: dict[str, concurrent.futures.Future] = {}
        requeued: dict[str, str] = {}
        while len(done) < len(tasks):
            for name, task in tasks.items():
                if name in done or name in running:
                    continue
                deps = rules.depends_tasks(task["depends"]) if task.get("depends") else []
                if "dependencies" in task:
                    raise rules.Unsupported("dependencies (fanflow writes depends)")
                if any(d not in done for d in deps):
                    continue
                if deps and not rules.evaluate_depends(task["depends"], {d: _results(done[d]) for d in deps}):
                    done[name] = self._record(Node(f"{node_name}.{name}", "Omitted", "Skipped"))
                    continue
                try:
                    resolved = self._resolve(task, self._scope(tasks, done, name))
                except rules.MissingVariable as exc:
                    requeued[name] = str(exc)
                    continue
                except rules.TemplateError as exc:
                    done[name] = self._record(Node(f"{node_name}.{name}", "Error", message=str(exc)))
                    continue
                requeued.pop(name, None)
                running[name] = self._pool.submit(self._run_task, resolved, f"{node_name}.{name}")
            if not running:
                if len(done) < len(tasks):
                    raise Hung("requeued for ever: " + "; ".join(f"{t}: {m}" for t, m in requeued.items()))
                break
            finished, _ = concurrent.futures.wait(
                running.values(), return_when=concurrent.futures.FIRST_COMPLETED
            )
            for name in [n for n, f in running.items() if f in finished]:
                done[name] = running.pop(name).result()
        phase = _dag_phase(tasks, done)
        message = "; ".join(n.message for n in done.values() if n.failed and n.message)
        return self._record(Node(node_name, phase, "DAG", message, children=list(done.values())))

    def _resolve(self, task: dict, scope: dict[str, str]) -> dict:
        """``resolveDependencyReferences``: substitute the task's references to earlier tasks."""
        strict = ("tasks", "steps") if self.version.strict_references else ()
        if self.version.resolves_when_first and task.get("when"):
            when = self._substitute(task["when"], scope, strict_prefixes=strict)
            if not rules.should_execute(when):
                return {**task, "when": when}
        return self._substitute(task, scope, strict_prefixes=strict)

    def _scope(self, tasks: dict, done: dict[str, Node], name: str) -> dict[str, str]:
        scope = dict(self.globals)
        for ancestor in _ancestors(tasks, name):
            node = done[ancestor]
            prefix = f"tasks.{ancestor}"
            scope[f"{prefix}.status"] = node.phase
            if node.kind == "TaskGroup":
                scope.update(self._aggregated(prefix, node.children))
            else:
                scope.update(
                    {
                        f"{prefix}.outputs.parameters.{k}": v
                        for k, v in node.outputs.items()
                        if k != "exitCode"
                    }
                )
        return scope

    def _aggregated(self, prefix: str, children: list[Node]) -> dict[str, str]:
        values: dict[str, list[str]] = {}
        for child in children:  # already in loop-index order
            if child.phase != "Succeeded":
                continue
            for key, value in child.outputs.items():
                if key != "exitCode":
                    values.setdefault(key, []).append(value)
        return {
            f"{prefix}.outputs.parameters.{k}": rules.aggregate(v, self.version) for k, v in values.items()
        }

    # -- steps --------------------------------------------------------------------------
    def _steps(self, template: dict, node_name: str) -> Node:
        limit = template.get("parallelism")
        gate = threading.Semaphore(int(limit)) if limit else None
        done: dict[str, Node] = {}
        strict = ("tasks", "steps") if self.version.strict_references else ()
        for index, group in enumerate(template["steps"]):
            scope = dict(self.globals)
            for step_name, node in done.items():
                scope.update(
                    {
                        f"steps.{step_name}.outputs.parameters.{k}": v
                        for k, v in node.outputs.items()
                        if k != "exitCode"
                    }
                )
            futures = {}
            for step in group:
                try:
                    resolved = self._substitute(step, scope, strict_prefixes=strict)
                except rules.MissingVariable as exc:
                    raise Hung(str(exc)) from None
                futures[step["name"]] = self._pool.submit(
                    self._run_task, resolved, f"{node_name}[{index}].{step['name']}", gate
                )
            for step_name, future in futures.items():
                done[step_name] = future.result()
            failed = [n for n in (done[s["name"]] for s in group) if n.failed]
            if failed:
                message = f"child '{failed[0].name}' failed: {failed[0].message}"
                return self._record(Node(node_name, "Failed", "Steps", message, children=list(done.values())))
        return self._record(Node(node_name, "Succeeded", "Steps", children=list(done.values())))

    # -- resources ----------------------------------------------------------------------
    def _resource(self, template: dict, node_name: str) -> Node:
        resource = template["resource"]
        if resource["action"] == "delete":
            flags = resource.get("flags", [])
            selector = flags[flags.index("--selector") + 1]
            gone = self.cluster.delete(selector)
            return self._record(Node(node_name, "Succeeded", "Resource", message=f"deleted {gone}"))
        if resource["action"] != "create":
            raise rules.Unsupported(f"resource action {resource['action']}")
        try:
            name = self.cluster.create(resource["manifest"], self.globals["workflow.namespace"])
        except (AssertionError, RuntimeError) as exc:
            return self._record(Node(node_name, "Failed", "Resource", message=str(exc)))
        deadline = float(template.get("activeDeadlineSeconds", 600))
        ready = self.cluster.wait_ready(name, deadline)
        phase = "Succeeded" if ready else "Failed"
        message = "" if ready else f"InferenceService {name} not ready within {deadline:g}s"
        return self._record(Node(node_name, phase, "Resource", message))


def _results(node: Node) -> dict[str, bool]:
    children = node.children if node.kind == "TaskGroup" else []
    return {
        "Succeeded": node.phase == "Succeeded",
        "Failed": node.phase == "Failed",
        "Errored": node.phase == "Error",
        "Skipped": node.phase == "Skipped",
        "Omitted": node.phase == "Omitted",
        "Daemoned": False,
        "AnySucceeded": any(c.phase == "Succeeded" for c in children),
        "AllFailed": bool(children) and all(c.phase == "Failed" for c in children),
    }


def _ancestors(tasks: dict, name: str) -> set[str]:
    found: set[str] = set()
    stack = [name]
    while stack:
        for dep in rules.depends_tasks(tasks[stack.pop()].get("depends") or ""):
            if dep not in found:
                found.add(dep)
                stack.append(dep)
    return found


def _dag_phase(tasks: dict, done: dict[str, Node]) -> str:
    """``assessDAGPhase``: failed when a target (a task nothing depends on) failed, an omitted
    target taking the phase of what it depends on, a failure first."""
    used = {d for t in tasks.values() for d in rules.depends_tasks(t.get("depends") or "")}

    def branch(name: str) -> str:
        node = done[name]
        if node.phase != "Omitted":
            return node.phase
        phases = [branch(d) for d in rules.depends_tasks(tasks[name].get("depends") or "")]
        return next((p for p in phases if p in ("Failed", "Error")), "Succeeded")

    for target in sorted(set(tasks) - used):
        phase = branch(target)
        if phase in ("Failed", "Error"):
            return phase
    return "Succeeded"


def _seconds(text: str) -> float:
    for unit, size in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * size
    return float(text)
