"""The scheduling core: a pure state machine, no I/O, no threads, no clock.

It is driven the way ``graphlib.TopologicalSorter`` is: the caller asks, the core answers
with frozen records (``Task``), the caller reports back, and the core never calls out::

    core = Scheduler(plan, capacity)
    core.start(now)
    while not core.done:
        for task in core.ready(now):      # newly ready: inputs resolved, nothing started
            ...                           # found in a cache? core.reused(task.name, output, now)
        for task in core.admit(now):      # start these now: they fit the limits
            ...                           # hand them to an executor
        ...                               # core.succeeded / failed / cancelled / serving /
                                          # restarted / service_stopped, as results come
        for name in core.stops(): ...     # stop these, then report them cancelled
        events = core.events()            # record them before acting on them

Misuse (a result for a task that is not running, reuse of a task that has started, a name
the core never handed out) raises ValueError.

The state, as plain data (in the manner of ``dask/local.py``):

- ``_Node``, one per task: its name, step run, position among the step's branches, state,
  attempt, inputs (from when it is handed out until it ends), output, error, reason, and
  whether it was reused.
- ``_StepRun``, one per step: its plan, the steps it still waits for, its nodes once
  expanded (a fan-out's items are computed from its axes when asked, not stored), the
  frontier (nodes never handed out), the queue (handed out or due for a retry, waiting for
  admission), and the counters that admission, quorum and settling read (running, settled,
  succeeded, lost, the failed nodes).
- the scheduler: resources in use, tasks running, the retry heap, stop requests, events.

The decisions are the small methods below: expansion (``_activate``), resolution
(``_lookup``), quorum (``_tally``, with the arithmetic in ``quorum``), admission (``admit``)
and the transitions of the state machine.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from fanflow.engine.naming import branch_names, item_at
from fanflow.engine.plan import Plan, StepPlan
from fanflow.engine.quorum import Tally
from fanflow.engine.resolve import ResolveError, descend, fan_out_axes
from fanflow.spec import conditions
from fanflow.spec.refs import ITEM, PARAMS, Ref, template
from fanflow.vocab.states import OK, TERMINAL, Event, State

MAX_BACKOFF = 300.0
WINDOW = 4096  # tasks handed out by ready() and not yet started, at most


class Task(NamedTuple):
    """A task as the core saw it when it handed this record out: a copy that never changes."""

    name: str  # e.g. train[model=cnn]
    step: str
    index: int  # position among the step's branches (declared order)
    item: dict[str, Any] | None
    state: State
    attempt: int
    inputs: dict[str, Any] | None
    output: Any
    error: str | None
    reason: str | None  # why it was skipped or cancelled
    cached: bool  # its output was reused, not computed


class _Node:
    __slots__ = ("attempt", "cached", "error", "held", "index", "inputs", "name", "offered", "output",
                 "reason", "run", "state")

    def __init__(self, name: str, run: _StepRun, index: int):
        self.name = name
        self.run = run
        self.index = index
        self.state = State.PENDING
        self.attempt = 0
        self.inputs: dict[str, Any] | None = None
        self.output: Any = None
        self.error: str | None = None
        self.reason: str | None = None
        self.cached = False
        self.offered = False  # handed out by ready()
        self.held: dict[str, float] | None = None  # resources admitted with, given back when it ends

    def record(self) -> Task:
        run = self.run
        return Task(self.name, run.name, self.index, run.item(self.index), self.state, self.attempt,
                    self.inputs, self.output, self.error, self.reason, self.cached)


class _StepRun:
    __slots__ = ("activated", "announced", "axes", "failed", "frontier", "inputs", "lost", "name", "needs", "ok",
                 "outcome", "plan", "queue", "running", "settled", "tasks", "waiting")

    def __init__(self, plan: StepPlan):
        self.plan = plan
        self.name = plan.name
        self.inputs = template(plan.step.with_)  # a task's inputs, given how to look references up
        self.waiting = set(plan.upstream)  # upstream steps not settled yet
        self.tasks: list[_Node] | None = None
        self.axes: dict[str, list] | None = None  # a fan-out's axes, once known
        self.frontier = 0  # tasks[frontier:] were never handed out
        self.announced = 0  # tasks[:announced] have had their pending event
        self.queue: deque[_Node] = deque()  # handed out or due for a retry, waiting for admission
        self.needs: dict[int, dict[str, float]] = {}  # resources per task, by light share
        self.running = 0
        self.settled = 0  # tasks that ended or are serving
        self.ok = 0  # of those, the ones that succeeded or are serving
        self.lost = 0  # tasks that ended without succeeding
        self.failed: list[_Node] = []
        self.outcome: str | None = None  # succeeded / failed / skipped / cancelled, once settled
        self.activated = False

    def item(self, index: int) -> dict[str, Any] | None:
        return item_at(self.axes, index) if self.axes is not None else None

    def need(self, share: int) -> dict[str, float]:
        need = self.needs.get(share)
        if need is None:
            res = self.plan.resources
            need = self.needs[share] = {
                k: v for k, v in (("cpus", res.cpus / share), ("gpus", res.gpus),
                                  ("memory", (res.memory or 0) / share)) if v
            }
        return need


class Scheduler:
    def __init__(self, plan: Plan, capacity: dict[str, float] | None = None, window: int = WINDOW):
        self.plan = plan
        self.params = plan.params
        self.capacity = {"cpus": math.inf, "gpus": math.inf, "memory": math.inf, **(capacity or {})}
        self.used = {"cpus": 0.0, "gpus": 0.0, "memory": 0.0}
        self.limit = plan.workflow.parallelism or math.inf
        self.window = window
        self.steps = {name: _StepRun(p) for name, p in plan.steps.items()}
        self.running = 0  # tasks running (services that are up are not counted)
        self.aborted: str | None = None  # why the run stopped handing out work
        self.cancelled_by_user = False
        self._nodes: dict[str, _Node] = {}
        self._events: list[Event] = []
        self._stops: list[str] = []
        self._retry_heap: list[tuple[float, int, _Node]] = []
        self._seq = itertools.count()
        self._waiting = 0  # handed out by ready(), neither started nor ended
        self._failures: list[_Node] = []  # failures that no quorum tolerates
        self._restarts: dict[str, int] = {}

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
        return "failed" if self._failures else "succeeded"

    @property
    def failures(self) -> list[Task]:
        """Failures that no quorum tolerates, in the order they happened."""
        return [node.record() for node in self._failures]

    def next_wakeup(self) -> float | None:
        return self._retry_heap[0][0] if self._retry_heap else None

    def events(self) -> list[Event]:
        """Every change of state since the last call, in order: record them before acting."""
        events, self._events = self._events, []
        return events

    def stops(self) -> list[str]:
        """Running tasks the caller must stop (a fail-fast or a cancel); report each back with
        ``cancelled``."""
        stops, self._stops = self._stops, []
        return stops

    # -- reading ------------------------------------------------------------------------
    @property
    def tasks(self) -> TaskTable:
        return TaskTable(self._nodes, self.steps)

    def task(self, name: str) -> Task:
        return self._node(name).record()

    def state(self, name: str) -> State:
        return self._node(name).state

    def attempt(self, name: str) -> int:
        return self._node(name).attempt

    def sizes(self) -> dict[str, int]:
        """How many tasks each step has, once expanded (a fan-out's tasks are created at once;
        their pending events come as they are handed out)."""
        return {name: len(run.tasks) for name, run in self.steps.items() if run.tasks is not None}

    def _node(self, name: str) -> _Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise ValueError(f"no task {name!r} in this run") from None

    # -- handing out work ---------------------------------------------------------------
    def ready(self, now: float) -> list[Task]:
        """Tasks that became ready since the last call, in declared order, their inputs
        resolved; none has started. The caller may report any of them ``reused``; the rest
        wait for ``admit``. At most ``window`` tasks wait so at a time: the others are
        handed out as those start."""
        offered: list[Task] = []
        for run in self.steps.values():
            tasks = run.tasks
            while tasks is not None and run.frontier < len(tasks) and self._waiting < self.window:
                if self.aborted:
                    return offered
                if run.frontier >= run.announced:
                    self._announce(run, run.frontier + self.window, now)
                node = tasks[run.frontier]
                run.frontier += 1
                if node.state is not State.PENDING:
                    continue
                try:
                    node.inputs = run.inputs(lambda ref, n=node, r=run: self._lookup(ref, n, r))
                except ResolveError as exc:
                    node.attempt += 1
                    self._final_failure(node, str(exc), now)
                    continue
                node.offered = True
                self._waiting += 1
                run.queue.append(node)
                offered.append(node.record())
        return offered

    def admit(self, now: float, light: Mapping[str, int] | None = None) -> list[Task]:
        """Tasks to start now, each marked running with its attempt number: tasks handed out
        by ``ready`` and retries that are due, within the capacity, the workflow's and the
        steps' parallelism. A step in ``light`` has proven to be made of tiny tasks: each of
        its tasks is admitted at 1/share of its resources, so that more are in flight and an
        executor can queue them behind one another instead of leaving a core idle."""
        if self.aborted:
            return []
        while self._retry_heap and self._retry_heap[0][0] <= now:
            node = heapq.heappop(self._retry_heap)[2]
            if node.state is State.RETRYING:
                node.run.queue.append(node)
        started: list[Task] = []
        used, capacity = self.used, self.capacity
        for run in self.steps.values():
            queue = run.queue
            if not queue:
                continue
            need = run.need(light.get(run.name, 1) if light else 1)
            step_limit = run.plan.step.parallelism or math.inf
            service = run.plan.service
            while queue:
                if not service and self.running >= self.limit:
                    return started
                if run.running >= step_limit or any(used[k] + v > capacity[k] + 1e-9 for k, v in need.items()):
                    break
                node = queue.popleft()
                if node.state is State.PENDING:
                    self._waiting -= 1
                elif node.state is not State.RETRYING:
                    continue  # reused, skipped or cancelled while it waited
                for key, amount in need.items():
                    used[key] += amount
                node.held = need
                run.running += 1
                if not service:
                    self.running += 1
                node.attempt += 1
                node.state = State.RUNNING
                self._emit(node, now)
                started.append(node.record())
        return started

    def reused(self, name: str, output: Any, now: float, **detail: Any) -> None:
        """A task handed out by ``ready`` takes an earlier output (the cache, a resumed run)
        instead of running: it succeeds at once and holds no capacity."""
        node = self._node(name)
        if node.state is not State.PENDING or not node.offered or node.attempt:
            raise ValueError(f"{name} cannot be reused: it is {node.state}, not a task handed out by "
                             "ready() that has not started")
        self._waiting -= 1
        node.attempt = 1
        node.state = State.RUNNING
        self._emit(node, now)
        node.output, node.cached = output, True
        self._settle_node(node, State.SUCCEEDED)
        self._emit(node, now, output=output, cached=True, **detail)
        self._branch_done(node, now)

    # -- taking results -----------------------------------------------------------------
    def succeeded(self, name: str, output: Any, now: float, **detail: Any) -> None:
        node = self._expect(name, (State.RUNNING,), "succeed")
        self._release(node)
        node.output, node.error = output, None
        self._settle_node(node, State.SUCCEEDED)
        self._emit(node, now, output=output, **detail)
        self._branch_done(node, now)

    def serving(self, name: str, endpoint: Any, now: float) -> None:
        """A service task is up: its endpoint is its output; it keeps its resources (and its
        place in the step's parallelism) until it is stopped."""
        node = self._expect(name, (State.RUNNING,), "start serving")
        node.output = endpoint
        self._settle_node(node, State.SERVING)
        self._emit(node, now, output=endpoint)
        self._branch_done(node, now)

    def restarted(self, name: str, now: float, error: str) -> Task | None:
        """A service that was up died. Returns the record to start it again with (its next
        attempt), or None when its restarts are spent: then it has failed."""
        node = self._expect(name, (State.SERVING,), "restart")
        allowed = node.run.plan.step.restarts
        count = self._restarts.get(name, 0) + 1
        if count > allowed or self.aborted:
            self.service_stopped(name, now, error=f"{error} (gave up after {allowed} restarts)")
            return None
        self._restarts[name] = count
        node.attempt += 1
        self._emit(node, now, restart=count, error=error)
        return node.record()

    def service_stopped(self, name: str, now: float, error: str | None = None) -> None:
        """A service that was up has been stopped at the end of the run (or died for good)."""
        node = self._expect(name, (State.SERVING,), "stop serving")
        self._release(node)
        if error:
            node.error = error
            self._settle_node(node, State.FAILED)
            self._emit(node, now, error=error)
            self._failures.append(node)
        else:
            self._settle_node(node, State.SUCCEEDED)
            self._emit(node, now)

    def failed(self, name: str, error: str, now: float, *, retryable: bool = True, **detail: Any) -> None:
        node = self._expect(name, (State.RUNNING,), "fail")
        self._release(node)
        step = node.run.plan.step
        if retryable and node.attempt <= step.retries and not self.aborted:
            retry_at = now + min(step.retry_backoff * 2 ** (node.attempt - 1), MAX_BACKOFF)
            node.state, node.error = State.RETRYING, error
            heapq.heappush(self._retry_heap, (retry_at, next(self._seq), node))
            self._emit(node, now, error=error, retry_at=retry_at, **detail)
            return
        self._final_failure(node, error, now, **detail)

    def cancelled(self, name: str, now: float, reason: str) -> None:
        """A running task (or a service) was stopped, as ``stops`` asked."""
        node = self._expect(name, (State.RUNNING, State.SERVING), "be cancelled")
        self._release(node)
        node.reason = reason
        self._settle_node(node, State.CANCELLED)
        self._emit(node, now, reason=reason)
        self._branch_done(node, now)

    def cancel(self, now: float, reason: str) -> None:
        """Stop the run: nothing new starts; running tasks are to be stopped."""
        self.cancelled_by_user = True
        self._abort(now, reason)

    def _expect(self, name: str, states: tuple[State, ...], what: str) -> _Node:
        node = self._node(name)
        if node.state not in states:
            raise ValueError(f"{name} cannot {what}: it is {node.state}, not {' or '.join(states)}")
        return node

    def _release(self, node: _Node) -> None:
        """A task that ran (or served) ends: it gives back its slot and its resources."""
        run = node.run
        run.running -= 1
        if node.state is State.RUNNING and not run.plan.service:
            self.running -= 1
        if node.held:
            for key, amount in node.held.items():
                self.used[key] -= amount
        node.held = None

    def _settle_node(self, node: _Node, state: State) -> None:
        """Move a task into a state it stays settled in (it ended, or it is serving), and
        count it for its step."""
        run, was = node.run, node.state
        node.state = state
        if was is not State.SERVING:
            run.settled += 1
            if state in OK:
                run.ok += 1
        if state not in OK:
            run.lost += 1
            if state is State.FAILED:
                run.failed.append(node)
        if state in TERMINAL:
            node.inputs = None  # only a task that may run again needs them

    def _final_failure(self, node: _Node, error: str, now: float, **detail: Any) -> None:
        node.error = error
        self._settle_node(node, State.FAILED)
        self._emit(node, now, error=error, **detail)
        tolerated = self._tolerated(node.run)
        self._branch_done(node, now)
        if not tolerated:
            self._failures.append(node)
            if node.run.plan.policy == "fail_fast":
                self._abort(now, f"{node.name} failed")

    def _emit(self, node: _Node, now: float, **detail: Any) -> None:
        if node.reason and node.state in (State.SKIPPED, State.CANCELLED):
            detail.setdefault("reason", node.reason)
        self._events.append(Event(node.name, node.run.name, node.state, node.attempt, now, detail))

    # -- fan-in bookkeeping -------------------------------------------------------------
    def _branch_done(self, node: _Node, now: float) -> None:
        run = node.run
        for name in run.plan.downstream:
            consumer = self.steps[name]
            if consumer.activated or run.name not in consumer.plan.fan_in or consumer.plan.quorum is None:
                continue
            rule = consumer.plan.quorum
            tally, known = self._tally(consumer)
            if known and not tally.reachable(rule):
                tally, _ = self._tally(consumer, failures=True)
                self._fail_step(consumer, now, f"quorum can no longer be met: {tally.describe(rule)}")
            elif tally.met(rule) and consumer.plan.step.wait == "quorum" and self._others_settled(consumer):
                self._activate(consumer, now)
        if run.tasks is not None and run.settled == len(run.tasks) and run.outcome is None:
            self._settle(run, now)

    def _tally(self, consumer: _StepRun, failures: bool = False) -> tuple[Tally, bool]:
        """What the branches a consumer with ``min_success`` collects came to so far, and
        whether every step it collects has been expanded (its total is known)."""
        tally = Tally(list(consumer.plan.fan_in))
        known = True
        for source in consumer.plan.fan_in:
            run = self.steps[source]
            if run.tasks is None:
                known = known and run.outcome is not None
                continue
            tally.total += len(run.tasks)
            tally.ok += run.ok
            tally.lost += run.lost
            if failures:
                tally.failures += [f"{n.name}: {n.error}" for n in sorted(run.failed, key=lambda n: n.index)]
        tally.pending = tally.total - tally.ok - tally.lost
        return tally, known

    def _tolerated(self, run: _StepRun) -> bool:
        """A branch failure is tolerated when every consumer takes it through a quorum that
        can still be met."""
        consumers = [self.steps[n] for n in run.plan.downstream]
        if not consumers:
            return False
        for consumer in consumers:
            if run.name not in consumer.plan.fan_in or consumer.plan.quorum is None:
                return False
            tally, known = self._tally(consumer)
            if known and not tally.reachable(consumer.plan.quorum):
                return False
        return True

    def _others_settled(self, consumer: _StepRun) -> bool:
        return all(
            self.steps[u].outcome is not None or u in consumer.plan.fan_in for u in consumer.plan.upstream
        )

    def _settle(self, run: _StepRun, now: float) -> None:
        states = {node.state for node in run.tasks}
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
            consumer.waiting.discard(run.name)
            if not consumer.waiting and not consumer.activated and consumer.outcome is None:
                self._activate(consumer, now)

    # -- activation and expansion -------------------------------------------------------
    def _activate(self, run: _StepRun, now: float) -> None:
        run.activated = True
        if self.aborted:
            return
        plan = run.plan
        if plan.quorum is not None and plan.fan_in:
            tally, _ = self._tally(run, failures=True)
            if not tally.met(plan.quorum):
                self._fail_step(run, now, f"quorum not met: {tally.describe(plan.quorum)}")
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
            culprit = next((n for n in upstream.tasks or [] if n.state is State.FAILED), None)
            why = f"{culprit.name} failed" if culprit else f"{up} {upstream.outcome}"
            return self._skip_step(run, now, f"upstream {why}")
        try:
            if not conditions.evaluate(plan.step.when, lambda ref: self._lookup(ref, None, run)):
                return self._skip_step(run, now, f"when: {plan.step.when} is false")
            axes = self._axes(run)
        except Exception as exc:  # a condition or a fan-out that cannot be evaluated fails the step
            return self._fail_step(run, now, str(exc))
        self._expand(run, axes, now)
        if not run.tasks:
            self._settle(run, now)

    def _axes(self, run: _StepRun) -> dict[str, list] | None:
        fan_out = run.plan.step.fan_out
        if not fan_out:
            return None
        return fan_out_axes(fan_out, lambda ref: self._lookup(ref, None, run))

    def _expand(self, run: _StepRun, axes: dict[str, list] | None, now: float) -> None:
        """Create the step's tasks: one, or one per branch of its fan-out. Their pending events
        come a window at a time, as they are handed out (``_announce``): a fan-out of 100,000
        never has 100,000 events and items waiting to be recorded at once."""
        run.axes = axes
        run.tasks = []
        names = branch_names(run.name, axes) if axes is not None else [run.name]
        for index, name in enumerate(names):
            node = _Node(name, run, index)
            self._nodes[name] = node
            run.tasks.append(node)
        self._announce(run, self.window, now)

    def _announce(self, run: _StepRun, upto: int, now: float) -> None:
        """Emit the pending events of the step's tasks up to ``upto``: each task's first event,
        before any other of its events."""
        tasks, axes = run.tasks, run.axes
        upto = min(upto, len(tasks))
        for node in tasks[run.announced : upto]:
            self._emit(node, now, **({"item": item_at(axes, node.index)} if axes is not None else {}))
        run.announced = max(run.announced, upto)

    def _skip_step(self, run: _StepRun, now: float, reason: str) -> None:
        self._close_step(run, now, State.SKIPPED, reason)

    def _fail_step(self, run: _StepRun, now: float, error: str) -> None:
        """The step cannot run at all (a quorum not met, a fan-out that is not a list)."""
        if run.outcome is not None:
            return
        run.activated = True
        node = self._placeholder(run, now)
        node.error, node.attempt = error, max(node.attempt, 1)
        self._settle_node(node, State.FAILED)
        self._emit(node, now, error=error)
        self._failures.append(node)
        self._settle(run, now)
        if run.plan.policy == "fail_fast":
            self._abort(now, f"{node.name} failed")

    def _close_step(self, run: _StepRun, now: float, state: State, reason: str) -> None:
        if run.outcome is not None:
            return
        run.activated = True
        if run.tasks is None:
            try:
                static = all(not isinstance(v, str) for v in (run.plan.step.fan_out or {}).values())
                axes = self._axes(run) if static else None
            except ResolveError:
                axes = None
            self._expand(run, axes, now)
        self._announce(run, len(run.tasks), now)
        for node in run.tasks:
            self._end_waiting(node, state, reason, now)
        if run.settled == len(run.tasks):
            self._settle(run, now)

    def _end_waiting(self, node: _Node, state: State, reason: str, now: float) -> None:
        """A task that had not started (or waited for a retry) is skipped or cancelled."""
        if node.state not in (State.PENDING, State.RETRYING):
            return
        if node.state is State.PENDING and node.offered:
            self._waiting -= 1
        node.reason = reason
        self._settle_node(node, state)
        self._emit(node, now)

    def _placeholder(self, run: _StepRun, now: float) -> _Node:
        if not run.tasks:
            self._expand(run, None, now)
        return run.tasks[0]

    def _abort(self, now: float, reason: str) -> None:
        if self.aborted:
            return
        self.aborted = reason
        why = f"not started: {reason}"
        for run in self.steps.values():
            if run.outcome is not None:
                continue
            if not run.activated or run.tasks is None:
                run.activated = True
                self._end_waiting(self._placeholder(run, now), State.CANCELLED, why, now)
                continue
            self._announce(run, len(run.tasks), now)
            for node in run.tasks:
                if node.state in (State.RUNNING, State.SERVING):
                    self._stops.append(node.name)
                else:
                    self._end_waiting(node, State.CANCELLED, why, now)
            run.queue.clear()
        self._retry_heap.clear()

    # -- references ---------------------------------------------------------------------
    def _lookup(self, ref: Ref, node: _Node | None, run: _StepRun) -> Any:
        if ref.root == PARAMS:
            return descend(self.params, ref.path, ref)
        if ref.root == ITEM:
            return descend(run.item(node.index) if node else None, ref.path, ref)
        source = self.steps[ref.root]
        if ref.collect:
            return [descend(n.output, ref.path, ref) for n in source.tasks or () if n.state in OK]
        producer = (source.tasks or [None])[0]
        if producer is None or producer.state not in OK:
            raise ResolveError(f"{ref}: {ref.root} has no output")
        return descend(producer.output, ref.path, ref)


class TaskTable(Mapping):
    """Every task of a run by name, read as ``Task`` records made when asked for (a run of
    100,000 tasks holds no second copy of them)."""

    def __init__(self, nodes: dict[str, _Node], steps: dict[str, _StepRun]):
        self._nodes = nodes
        self._steps = steps

    def of_step(self, step: str) -> list[Task]:
        """The step's tasks, in declared order."""
        return [node.record() for node in self._steps[step].tasks or ()]

    def outputs(self) -> Iterator[Any]:
        """The output of every task that succeeded (or serves), with no record made."""
        return (node.output for node in self._nodes.values() if node.state in OK)

    def counts(self) -> tuple[dict[str, int], int]:
        """How many tasks are in each state, and how many of them reused an earlier output."""
        counts: dict[str, int] = {}
        reused = 0
        for node in self._nodes.values():
            counts[node.state.value] = counts.get(node.state.value, 0) + 1
            reused += node.cached
        return counts, reused

    def __getitem__(self, name: str) -> Task:
        return self._nodes[name].record()

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)
