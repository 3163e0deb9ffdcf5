"""The scheduling core: a pure state machine, no I/O, no threads, no clock.

It expands fan-outs (dynamic ones once their input arrives), says which tasks may start now
within the limits and resources, and takes each task's result. Every executor is driven by
the same core: the caller hands out what ``next_tasks`` returns and reports back with
``succeeded`` / ``failed`` / ``cancelled``. Every state change is appended to ``events`` for
the caller to record before it acts.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fanflow.engine.naming import branches
from fanflow.engine.plan import Plan, StepPlan
from fanflow.engine.quorum import Tally
from fanflow.engine.resolve import ResolveError, descend
from fanflow.spec import conditions
from fanflow.spec.refs import ITEM, PARAMS, Ref, substitute, whole_ref
from fanflow.vocab.states import OK, TERMINAL, Event, State

MAX_BACKOFF = 300.0
LIGHT_SHARE = 16  # tasks of a light step in flight per core


@dataclass(eq=False, slots=True)
class Task:
    name: str  # e.g. train[model=cnn]
    step: str
    index: int  # position among the step's branches (declared order)
    item: dict[str, Any] | None = None
    state: State = State.PENDING
    attempt: int = 0
    inputs: dict[str, Any] | None = None
    output: Any = None
    error: str | None = None
    reason: str | None = None  # why it was skipped or cancelled
    not_before: float = 0.0
    cached: bool = False
    held: dict[str, float] | None = None  # resources admitted with, released when it ends


@dataclass(eq=False)
class _StepRun:
    plan: StepPlan
    waiting: set[str]
    tasks: list[Task] | None = None
    ready: deque = field(default_factory=deque)
    unoffered: list = field(default_factory=list)  # ready tasks not yet offered for reuse
    running: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_terminal: int = 0
    outcome: str | None = None  # succeeded / failed / skipped / cancelled, once settled
    activated: bool = False


Reuse = Callable[[list["Task"]], dict[str, tuple[Any, dict[str, Any]]]]


class Scheduler:
    def __init__(self, plan: Plan, capacity: dict[str, float] | None = None):
        self.plan = plan
        self.params = plan.params
        self.capacity = {"cpus": math.inf, "gpus": math.inf, "memory": math.inf, **(capacity or {})}
        self.used = {"cpus": 0.0, "gpus": 0.0, "memory": 0.0}
        self.limit = plan.workflow.parallelism or math.inf
        self.steps = {name: _StepRun(p, set(p.upstream)) for name, p in plan.steps.items()}
        self.tasks: dict[str, Task] = {}
        self.events: list[Event] = []
        self.running = 0  # tasks running (services that are up are not counted)
        self._retry_heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._to_stop: list[str] = []
        self.aborted: str | None = None  # why the run stopped handing out work
        self.cancelled_by_user = False
        self.failures: list[Task] = []  # failures that no quorum tolerates

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, now: float) -> None:
        for run in list(self.steps.values()):
            if not run.waiting and not run.activated:
                self._activate(run, now)

    @property
    def done(self) -> bool:
        if self.running:
            return False
        if self.aborted:
            return True
        return all(run.outcome is not None for run in self.steps.values())

    @property
    def outcome(self) -> str:
        if self.cancelled_by_user:
            return "cancelled"
        return "failed" if self.failures else "succeeded"

    def next_wakeup(self) -> float | None:
        return self._retry_heap[0][0] if self._retry_heap else None

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def drain_stop_requests(self) -> list[str]:
        """Running tasks the caller must stop (a fail-fast or a cancel); report each back with
        ``cancelled``."""
        stop, self._to_stop = self._to_stop, []
        return stop

    # -- handing out work ---------------------------------------------------------------
    def next_tasks(
        self, now: float, reuse: Reuse | None = None, light: frozenset[str] = frozenset()
    ) -> list[Task]:
        """Tasks that may start now, marked running. Their ``inputs`` are resolved.

        ``reuse`` (optional) is asked once about each newly ready task, before admission, for
        an earlier output to reuse (the cache, a resumed run); those tasks succeed at once and
        take no capacity. Steps in ``light`` have proven to be made of tiny tasks: each is
        admitted at 1/LIGHT_SHARE of its resources, so that more are in flight and an
        executor can queue them behind one another instead of leaving a core idle."""
        if self.aborted:
            return []
        while self._retry_heap and self._retry_heap[0][0] <= now:
            _, _, name = heapq.heappop(self._retry_heap)
            task = self.tasks[name]
            if task.state is State.RETRYING:
                self.steps[task.step].ready.append(task)
        started: list[Task] = []
        for run in self.steps.values():
            if run.unoffered:
                if reuse is not None:
                    self._offer_reuse(run, now, reuse)
                run.unoffered = []
            if not run.ready:
                continue
            res = run.plan.resources
            share = LIGHT_SHARE if run.plan.name in light else 1
            need = {"cpus": res.cpus / share, "gpus": res.gpus, "memory": (res.memory or 0) / share}
            step_limit = run.plan.step.parallelism or math.inf
            service = run.plan.step.kind == "service"
            while run.ready:
                if not service and self.running >= self.limit:
                    return started
                if run.running >= step_limit or not self._fits(need):
                    break
                task = run.ready.popleft()
                if task.state not in (State.PENDING, State.RETRYING):
                    continue
                if task.inputs is None:
                    try:
                        task.inputs = self._resolve_inputs(run, task)
                    except ResolveError as exc:
                        task.attempt += 1
                        self._final_failure(task, str(exc), now)
                        continue
                for key, amount in need.items():
                    self.used[key] += amount
                task.held = need
                run.running += 1
                if not service:
                    self.running += 1
                task.attempt += 1
                task.state = State.RUNNING
                self._emit(task, now)
                started.append(task)
                if self.aborted:
                    return started
        return started

    def _offer_reuse(self, run: _StepRun, now: float, reuse: Reuse) -> None:
        fresh = []
        for task in run.unoffered:
            if task.state is State.PENDING and task.inputs is None:
                try:
                    task.inputs = self._resolve_inputs(run, task)
                except ResolveError as exc:
                    task.attempt += 1
                    task.state = State.RUNNING
                    self._final_failure(task, str(exc), now)
                    continue
                fresh.append(task)
        if not fresh:
            return
        found = reuse(fresh)
        if not found:
            return
        for task in fresh:
            if task.name in found:
                output, detail = found[task.name]
                task.attempt = 1
                task.state = State.RUNNING
                self._emit(task, now)
                task.state, task.output, task.cached = State.SUCCEEDED, output, True
                self._emit(task, now, output=output, cached=True, **detail)
                self._branch_done(task, now, ok=True)

    def _fits(self, need: dict[str, float]) -> bool:
        return all(self.used[k] + v <= self.capacity[k] + 1e-9 for k, v in need.items() if v)

    # -- taking results -----------------------------------------------------------------
    def succeeded(self, name: str, output: Any, now: float, *, cached: bool = False, **detail: Any) -> None:
        task = self.tasks[name]
        if task.state is not State.RUNNING:
            return
        self._release(task)
        task.state, task.output, task.cached, task.error = State.SUCCEEDED, output, cached, None
        self._emit(task, now, output=output, cached=cached, **detail)
        self._branch_done(task, now, ok=True)

    def serving(self, name: str, endpoint: Any, now: float) -> None:
        """A service task is up: its endpoint is its output; it keeps its resources."""
        task = self.tasks[name]
        if task.state is not State.RUNNING:
            return
        task.state, task.output = State.SERVING, endpoint
        self._emit(task, now, output=endpoint)
        self._branch_done(task, now, ok=True)

    def service_stopped(self, name: str, now: float, error: str | None = None) -> None:
        """A service that was up has been stopped at the end of the run (or died for good)."""
        task = self.tasks[name]
        if task.state is not State.SERVING:
            return
        self._release(task)
        if error:
            task.state, task.error = State.FAILED, error
            self._emit(task, now, error=error)
            self.failures.append(task)
        else:
            task.state = State.SUCCEEDED
            self._emit(task, now)

    def failed(self, name: str, error: str, now: float, *, retryable: bool = True, **detail: Any) -> None:
        task = self.tasks[name]
        if task.state is not State.RUNNING:
            return
        self._release(task)
        retries = self.steps[task.step].plan.step.retries
        if retryable and task.attempt <= retries and not self.aborted:
            backoff = self.steps[task.step].plan.step.retry_backoff * 2 ** (task.attempt - 1)
            task.state, task.error = State.RETRYING, error
            task.not_before = now + min(backoff, MAX_BACKOFF)
            heapq.heappush(self._retry_heap, (task.not_before, next(self._seq), name))
            self._emit(task, now, error=error, retry_at=task.not_before, **detail)
            return
        self._final_failure(task, error, now, **detail)

    def cancelled(self, name: str, now: float, reason: str) -> None:
        """A running task was stopped (by ``drain_stop_requests``)."""
        task = self.tasks[name]
        if task.state not in (State.RUNNING, State.SERVING):
            return
        self._release(task)
        task.state, task.reason = State.CANCELLED, reason
        self._emit(task, now, reason=reason)
        self._branch_done(task, now, ok=False)

    def cancel(self, now: float, reason: str) -> None:
        """Stop the run: nothing new starts; running tasks are to be stopped."""
        self.cancelled_by_user = True
        self._abort(now, reason)

    def _release(self, task: Task) -> None:
        run = self.steps[task.step]
        for key, amount in (task.held or {}).items():
            self.used[key] -= amount
        task.held = None
        run.running -= 1
        if task.state is State.RUNNING and run.plan.step.kind != "service":
            self.running -= 1

    def _final_failure(self, task: Task, error: str, now: float, **detail: Any) -> None:
        task.state, task.error = State.FAILED, error
        self._emit(task, now, error=error, **detail)
        run = self.steps[task.step]
        tolerated = self._tolerated(run, extra_failure=True)
        self._branch_done(task, now, ok=False)
        if not tolerated:
            self.failures.append(task)
            if run.plan.policy == "fail_fast":
                self._abort(now, f"{task.name} failed")

    def _emit(self, task: Task, now: float, **detail: Any) -> None:
        if task.reason and task.state in (State.SKIPPED, State.CANCELLED):
            detail.setdefault("reason", task.reason)
        self.events.append(Event(task.name, task.step, task.state, task.attempt, now, detail))

    # -- fan-in bookkeeping -------------------------------------------------------------
    def _branch_done(self, task: Task, now: float, *, ok: bool) -> None:
        run = self.steps[task.step]
        if task.state in TERMINAL or task.state is State.SERVING:
            run.n_terminal += 1
            if ok:
                run.n_ok += 1
            elif task.state is State.FAILED:
                run.n_failed += 1
        for name in run.plan.downstream:
            consumer = self.steps[name]
            if consumer.activated or task.step not in consumer.plan.fan_in or consumer.plan.quorum is None:
                continue
            met, reachable, detail = self._quorum(consumer)
            if not reachable:
                self._fail_step(consumer, now, f"quorum can no longer be met: {detail}")
            elif met and consumer.plan.step.wait == "quorum" and self._others_settled(consumer):
                self._activate(consumer, now)
        if run.tasks is not None and run.n_terminal == len(run.tasks) and run.outcome is None:
            self._settle(run, now)

    def _quorum(self, consumer: _StepRun) -> tuple[bool, bool, str]:
        """(met, still reachable, description) for a consumer's min_success over its fan-in."""
        tally = Tally(list(consumer.plan.fan_in))
        known = True
        for source in consumer.plan.fan_in:
            run = self.steps[source]
            if run.tasks is None:
                known = known and run.outcome is not None
                continue
            tally.total += len(run.tasks)
            tally.ok += run.n_ok
            for t in run.tasks:
                if t.state in TERMINAL and t.state is not State.SUCCEEDED:
                    tally.lost += 1
                    if t.state is State.FAILED:
                        tally.failures.append(f"{t.name}: {t.error}")
        rule = consumer.plan.quorum
        return tally.met(rule), not known or tally.reachable(rule), tally.describe(rule)

    def _tolerated(self, run: _StepRun, extra_failure: bool = False) -> bool:
        """A branch failure is tolerated when every consumer takes it through a quorum that
        can still be met."""
        consumers = [self.steps[n] for n in run.plan.downstream]
        if not consumers:
            return False
        for consumer in consumers:
            if run.plan.name not in consumer.plan.fan_in or consumer.plan.quorum is None:
                return False
            _, reachable, _ = self._quorum(consumer)
            if not reachable:
                return False
        return True

    def _others_settled(self, consumer: _StepRun) -> bool:
        return all(
            self.steps[u].outcome is not None or u in consumer.plan.fan_in for u in consumer.plan.upstream
        )

    def _settle(self, run: _StepRun, now: float) -> None:
        states = {t.state for t in run.tasks}
        if states <= OK:
            run.outcome = "succeeded"
        elif State.CANCELLED in states:
            run.outcome = "cancelled"
        elif states == {State.SKIPPED}:
            run.outcome = "skipped"
        else:
            run.outcome = "failed"
        for name in run.plan.downstream:
            consumer = self.steps[name]
            consumer.waiting.discard(run.plan.name)
            if not consumer.waiting and not consumer.activated and consumer.outcome is None:
                self._activate(consumer, now)

    # -- activation and expansion -------------------------------------------------------
    def _activate(self, run: _StepRun, now: float) -> None:
        run.activated = True
        if self.aborted:
            return
        plan = run.plan
        quorum_detail = None
        if plan.quorum is not None and plan.fan_in:
            met, _, quorum_detail = self._quorum(run)
            if not met:
                self._fail_step(run, now, f"quorum not met: {quorum_detail}")
                return
        for up in plan.upstream:
            upstream = self.steps[up]
            if up in plan.fan_in and plan.quorum is not None:
                if upstream.outcome in ("skipped", "cancelled"):
                    return self._skip_step(run, now, f"{up} was {upstream.outcome}")
                continue
            if upstream.outcome == "succeeded":
                continue
            if upstream.outcome == "skipped":
                return self._skip_step(run, now, f"{up} was skipped")
            culprit = next((t for t in upstream.tasks or [] if t.state is State.FAILED), None)
            why = f"{culprit.name} failed" if culprit else f"{up} {upstream.outcome}"
            return self._skip_step(run, now, f"upstream {why}")
        try:
            if not conditions.evaluate(plan.step.when, lambda ref: self._lookup(ref, None, run)):
                return self._skip_step(run, now, f"when: {plan.step.when} is false")
            items = self._expand(run)
        except Exception as exc:  # a condition or a fan-out that cannot be evaluated fails the step
            return self._fail_step(run, now, str(exc))
        run.tasks = [self._new_task(run, name, index, item, now) for index, (name, item) in enumerate(items)]
        run.ready.extend(run.tasks)
        run.unoffered.extend(run.tasks)
        if not run.tasks:
            self._settle(run, now)

    def _expand(self, run: _StepRun) -> list[tuple[str, dict | None]]:
        fan_out = run.plan.step.fan_out
        if not fan_out:
            return [(run.plan.name, None)]
        axes: dict[str, list] = {}
        for axis, values in fan_out.items():
            if isinstance(values, str):
                ref = whole_ref(values)
                values = self._lookup(ref, None, run)
                if not isinstance(values, list):
                    raise ResolveError(
                        f"fan_out.{axis}: expected a list from {ref}, got {type(values).__name__}"
                    )
            axes[axis] = values
        return branches(run.plan.name, axes)

    def _skip_step(self, run: _StepRun, now: float, reason: str) -> None:
        self._close_step(run, now, State.SKIPPED, reason)

    def _fail_step(self, run: _StepRun, now: float, error: str) -> None:
        """The step cannot run at all (a quorum not met, a fan-out that is not a list)."""
        if run.outcome is not None:
            return
        run.activated = True
        task = self._placeholder(run, now)
        task.state, task.error, task.attempt = State.FAILED, error, max(task.attempt, 1)
        self._emit(task, now, error=error)
        run.n_failed += 1
        run.n_terminal = len(run.tasks)
        self.failures.append(task)
        self._settle(run, now)
        if run.plan.policy == "fail_fast":
            self._abort(now, f"{task.name} failed")

    def _close_step(self, run: _StepRun, now: float, state: State, reason: str) -> None:
        if run.outcome is not None:
            return
        run.activated = True
        if run.tasks is None:
            try:
                static = all(not isinstance(v, str) for v in (run.plan.step.fan_out or {}).values())
                items = self._expand(run) if static else [(run.plan.name, None)]
            except ResolveError:
                items = [(run.plan.name, None)]
            run.tasks = [
                self._new_task(run, name, index, item, now) for index, (name, item) in enumerate(items)
            ]
        for task in run.tasks:
            if task.state in (State.PENDING, State.RETRYING):
                task.state, task.reason = state, reason
                self._emit(task, now, reason=reason)
        run.n_terminal = sum(1 for t in run.tasks if t.state in TERMINAL or t.state is State.SERVING)
        if run.n_terminal == len(run.tasks):
            self._settle(run, now)

    def _placeholder(self, run: _StepRun, now: float) -> Task:
        if run.tasks:
            return run.tasks[0]
        task = self._new_task(run, run.plan.name, 0, None, now)
        run.tasks = [task]
        return task

    def _new_task(self, run: _StepRun, name: str, index: int, item: dict | None, now: float) -> Task:
        task = Task(name=name, step=run.plan.name, index=index, item=item)
        self.tasks[name] = task
        self._emit(task, now, **({"item": item} if item is not None else {}))
        return task

    def _abort(self, now: float, reason: str) -> None:
        if self.aborted:
            return
        self.aborted = reason
        for run in self.steps.values():
            if run.outcome is not None:
                continue
            if not run.activated or run.tasks is None:
                run.activated = True
                task = self._placeholder(run, now)
                task.state, task.reason = State.CANCELLED, f"not started: {reason}"
                self._emit(task, now)
                continue
            for task in run.tasks:
                if task.state in (State.PENDING, State.RETRYING):
                    task.state, task.reason = State.CANCELLED, f"not started: {reason}"
                    self._emit(task, now)
                elif task.state in (State.RUNNING, State.SERVING):
                    self._to_stop.append(task.name)
            run.ready.clear()
        self._retry_heap.clear()

    # -- references ---------------------------------------------------------------------
    def _resolve_inputs(self, run: _StepRun, task: Task) -> dict[str, Any]:
        return substitute(run.plan.step.with_, lambda ref: self._lookup(ref, task, run))

    def _lookup(self, ref: Ref, task: Task | None, run: _StepRun) -> Any:
        if ref.root == PARAMS:
            return descend(self.params, ref.path, ref)
        if ref.root == ITEM:
            return descend(task.item if task else None, ref.path, ref)
        source = self.steps[ref.root]
        if ref.collect:
            outputs = [t.output for t in source.tasks or [] if t.state in OK]
            return [descend(o, ref.path, ref) for o in outputs]
        producer = (source.tasks or [None])[0]
        if producer is None or producer.state not in OK:
            raise ResolveError(f"{ref}: {ref.root} has no output")
        return descend(producer.output, ref.path, ref)
