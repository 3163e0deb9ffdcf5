"""Property tests of the scheduling core: random DAGs, fan-out widths, failures and quorums."""

import math
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanflow.vocab.states import OK, TERMINAL, State
from tests.engine.drive import scheduler

NOOP = "json:dumps"


@st.composite
def workflows(draw):
    n = draw(st.integers(1, 6))
    steps, widths = {}, {}
    for i in range(n):
        name = f"s{i}"
        width = draw(st.sampled_from([None, 1, 2, 3, 5]))
        ups = sorted(draw(st.sets(st.sampled_from([f"s{j}" for j in range(i)]), max_size=3))) if i else []
        with_ = {}
        for up in ups:
            with_[up] = f"${{{up}[*]}}" if widths[up] else f"${{{up}}}"
        step = {"uses": NOOP, "with": with_, "retries": draw(st.integers(0, 2)), "retry_backoff": 0}
        if width:
            step["fan_out"] = {"x": list(range(width))}
            step["with"]["x"] = "${item.x}"
        fan_in_width = sum(widths[u] for u in ups if widths[u])
        if fan_in_width and draw(st.booleans()):
            step["min_success"] = draw(st.one_of(st.integers(1, fan_in_width), st.sampled_from([0.5, 1.0])))
        steps[name] = step
        widths[name] = width
    policy = draw(st.sampled_from(["fail_fast", "continue"]))
    failing = draw(st.sets(st.text("abcdefgh", min_size=1, max_size=3), max_size=4))
    cached = draw(st.sets(st.text("abcdefgh", min_size=1, max_size=3), max_size=3))
    return steps, policy, failing, cached, draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 4)), draw(
        st.sampled_from([1, 2, 3, 4096]))


def _quorum_need(rule, total):
    return rule if isinstance(rule, int) else max(1, math.ceil(rule * total - 1e-9))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows())
def test_random_workflows_keep_the_scheduling_invariants(case):
    steps, policy, failing_keys, cached_keys, seed, cpus, window = case
    rng = random.Random(seed)
    core = scheduler(steps, capacity={"cpus": cpus}, on_failure=policy, window=window)
    # A task fails (every attempt) when a hash of its name lands in the failing set; one whose
    # hash lands in the cached set is found in the cache when it is handed out.
    fails = _hashed(steps, failing_keys)
    cached = _hashed(steps, cached_keys) - fails
    records = []  # every record handed out, with how it read then
    inputs = {}  # each task's inputs, as last handed out

    running: dict[str, int] = {}
    started_attempts: set[tuple[str, int]] = set()
    finished_order: list[str] = []
    abort_seen_at = None
    now = 0.0
    core.start(now)
    for _round in range(5000):
        if core.done:
            break
        now += 1
        for name in core.stops():
            assert name in running, f"{name} was asked to stop but is not running"
            running.pop(name, None)
            core.cancelled(name, now, "stopped")
        offered = core.ready(now)
        assert all(t.state is State.PENDING and t.attempt == 0 and t.inputs is not None for t in offered)
        assert sum(1 for t in core.tasks.values() if t.state is State.PENDING and t.inputs is not None) <= window
        for task in offered:
            records.append((task, repr(task)))
            inputs[task.name] = task.inputs
            if task.name in cached:
                _check_inputs_exist(core, task, steps)
                core.reused(task.name, task.inputs.get("x", 0), now)
                finished_order.append(task.name)
        new = core.admit(now)
        for task in new:
            records.append((task, repr(task)))
            inputs[task.name] = task.inputs
            assert task.state is State.RUNNING and task.name not in cached
            key = (task.name, task.attempt)
            assert key not in started_attempts, f"{key} started twice"
            started_attempts.add(key)
            if abort_seen_at is not None:
                raise AssertionError(f"{task.name} started after the run was aborted")
            _check_inputs_exist(core, task, steps)
            running[task.name] = task.attempt
        if core.aborted and abort_seen_at is None:
            abort_seen_at = now
        if not running:
            wake = core.next_wakeup()
            if wake is not None:
                now = max(now, wake)
            continue
        name = rng.choice(sorted(running))  # branches finish in random order
        running.pop(name)
        if name in fails:
            core.failed(name, f"{name} failed", now)
        else:
            core.succeeded(name, inputs[name].get("x", 0), now)
            finished_order.append(name)
            with pytest.raises(ValueError):
                core.succeeded(name, 0, now)  # a second answer for the same attempt is misuse
        if core.aborted and abort_seen_at is None:
            abort_seen_at = now
    else:
        raise AssertionError("the run did not terminate")

    assert core.done
    assert all(t.state in TERMINAL for t in core.tasks.values()), {t.name: t.state for t in core.tasks.values()}
    assert all(repr(record) == then for record, then in records), "a record handed out changed"
    for task in core.tasks.values():
        if task.cached:
            assert task.name in cached and task.attempt == 1 and task.state is State.SUCCEEDED
    for name, step in steps.items():
        _check_fan_in_and_quorum(core, name, step, steps, inputs)
    if core.failures:
        assert core.outcome == "failed"
    else:
        assert core.outcome == "succeeded"
    for task in core.tasks.values():
        if task.state is State.FAILED and task.error == f"{task.name} failed":
            assert task.attempt == steps[task.step]["retries"] + 1 or core.aborted


def _hashed(steps, keys):
    return {name for name in _all_names(steps) if any(k in f"{zlib.crc32(name.encode()) % 9973:x}" for k in keys)}


def _all_names(steps):
    for name, step in steps.items():
        yield name
        for x in step.get("fan_out", {}).get("x", []):
            yield f"{name}[x={x}]"


def _upstreams(step):
    return [u for u in step["with"] if u != "x"]


def _check_inputs_exist(core, task, steps):
    """No task starts before the outputs it reads exist (its upstream steps have settled)."""
    for up in _upstreams(steps[task.step]):
        branches = [t for t in core.tasks.values() if t.step == up]
        assert branches, f"{task.name} started before {up} was expanded"
        assert all(t.state in TERMINAL or t.state is State.SERVING for t in branches), (
            f"{task.name} started while {up} was unfinished")


def _check_fan_in_and_quorum(core, name, step, steps, inputs):
    tasks = [t for t in core.tasks.values() if t.step == name]
    ups = _upstreams(step)
    for task in tasks:
        if task.state is not State.SUCCEEDED:
            continue
        for up in ups:
            up_tasks = sorted((t for t in core.tasks.values() if t.step == up), key=lambda t: t.index)
            expected = [t.output for t in up_tasks if t.state in OK]
            if steps[up].get("fan_out"):
                assert inputs[task.name][up] == expected, "fan-in is not in declared order"
            else:
                assert inputs[task.name][up] == expected[0]
        if "min_success" in step:
            fan_in = [t for t in core.tasks.values() if t.step in ups and steps[t.step].get("fan_out")]
            need = _quorum_need(step["min_success"], len(fan_in))
            assert sum(t.state is State.SUCCEEDED for t in fan_in) >= need, "quorum ran below its minimum"
    failed = any(t.state is State.FAILED for t in tasks)
    if "min_success" in step and failed and tasks[0].error and "quorum" in tasks[0].error:
        fan_in = [t for t in core.tasks.values() if t.step in ups and steps[t.step].get("fan_out")]
        need = _quorum_need(step["min_success"], len(fan_in))
        assert sum(t.state is State.SUCCEEDED for t in fan_in) < need
