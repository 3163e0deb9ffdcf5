"""The scheduling core, driven by hand: no processes, no clock."""

import pytest

from fanflow.vocab.states import State
from tests.engine.drive import run_all, scheduler, step

NOOP = "json:dumps"


def ok(value_of=lambda task: task.inputs):
    return lambda task: (True, value_of(task))


def test_static_fan_out_runs_one_task_per_item_named_by_item():
    core = scheduler({"train": {"uses": NOOP, "fan_out": {"model": ["cnn", "lr"]}, "with": {"m": "${item.model}"}}})
    started = run_all(core, ok())
    assert list(core.tasks) == ["train[model=cnn]", "train[model=lr]"]
    assert started["train[model=lr]"].inputs == {"m": "lr"}
    assert core.tasks["train[model=lr]"].item == {"model": "lr"}
    assert core.outcome == "succeeded"


def test_grid_is_the_cartesian_product_in_declared_order():
    core = scheduler({"t": {"uses": NOOP, "fan_out": {"lr": [0.1, 0.01], "depth": [2, 3, 4]},
                            "with": {"lr": "${item.lr}", "d": "${item.depth}"}}})
    started = run_all(core, ok())
    assert list(core.tasks) == [f"t[lr={lr},depth={d}]" for lr in (0.1, 0.01) for d in (2, 3, 4)]
    assert started["t[lr=0.01,depth=3]"].inputs == {"lr": 0.01, "d": 3}


def test_dynamic_fan_out_expands_when_its_input_arrives():
    core = scheduler({
        "pick": {"uses": NOOP},
        "serve": {"uses": NOOP, "fan_out": {"model": "${pick}"}, "with": {"m": "${item.model}"}},
    })
    core.start(0)
    (pick,) = step(core, 1)
    assert "serve" not in str(list(core.tasks))
    core.succeeded(pick.name, [{"name": "a", "x": 1}, {"name": "b", "x": 2}], 2)
    tasks = step(core, 3)
    assert [t.name for t in tasks] == ["serve[model=a]", "serve[model=b]"]
    assert tasks[1].inputs == {"m": {"name": "b", "x": 2}}


def test_dynamic_fan_out_over_a_non_list_fails_the_step_with_a_clear_error():
    core = scheduler({"pick": {"uses": NOOP}, "serve": {"uses": NOOP, "fan_out": {"m": "${pick}"}}})
    run_all(core, lambda t: (True, {"not": "a list"}))
    assert core.outcome == "failed"
    assert "expected a list from ${pick}, got dict" in core.tasks["serve"].error


def test_fan_in_is_in_declared_order_whatever_order_branches_finish():
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3, 4]}, "with": {"x": "${item.x}"}},
        "sum": {"uses": NOOP, "with": {"values": "${w[*]}"}},
    })
    core.start(0)
    tasks = step(core, 1)
    for task in reversed(tasks):  # finish last-declared first
        core.succeeded(task.name, task.inputs["x"] * 10, 2)
    (total,) = step(core, 3)
    assert total.inputs == {"values": [10, 20, 30, 40]}


def test_heterogeneous_fan_in_splices_several_steps_into_one_list():
    core = scheduler({
        "a": {"uses": NOOP, "fan_out": {"x": [1, 2]}, "with": {"v": "${item.x}"}},
        "b": {"uses": NOOP, "fan_out": {"y": [3]}, "with": {"v": "${item.y}"}},
        "c": {"uses": NOOP, "with": {"v": 4}},
        "all": {"uses": NOOP, "with": {"items": ["${a[*].v}", "${b[*].v}", "${c.v}"]}},
    })
    assert run_all(core, ok())["all"].inputs == {"items": [1, 2, 3, 4]}


def test_quorum_runs_the_fan_in_with_the_successes_and_reports_the_failures():
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3, 4]}, "with": {"x": "${item.x}"}},
        "pick": {"uses": NOOP, "with": {"got": "${w[*].x}"}, "min_success": 3},
    })
    started = run_all(core, lambda t: (t.name != "w[x=2]", t.inputs if t.name != "w[x=2]" else "boom"))
    assert core.outcome == "succeeded"
    assert started["pick"].inputs == {"got": [1, 3, 4]}
    assert core.tasks["w[x=2]"].state is State.FAILED and core.tasks["w[x=2]"].error == "boom"


def test_quorum_ratio_is_rounded_up():
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3]}},
        "pick": {"uses": NOOP, "with": {"got": "${w[*]}"}, "min_success": 0.5},
    })
    run_all(core, lambda t: (t.name == "w[x=1]" or t.step == "pick", "boom" if t.step == "w" and t.name != "w[x=1]" else 1))
    assert core.outcome == "failed"  # 1 of 3 is under ceil(0.5 * 3) = 2
    assert "1 of 3 branches of w succeeded, 2 needed" in core.tasks["pick"].error


def test_a_quorum_that_can_no_longer_be_met_fails_at_once_and_cancels_the_rest():
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3, 4]}},
        "pick": {"uses": NOOP, "with": {"got": "${w[*]}"}, "min_success": 4},
    }, capacity={"cpus": 4})
    core.start(0)
    tasks = step(core, 1)
    core.failed(tasks[0].name, "boom", 2)
    assert core.tasks["pick"].state is State.FAILED
    assert core.tasks["pick"].error.startswith(
        "quorum can no longer be met: 1 of 4 branches of w did not succeed, so at most 3 can (0 have so far), 4 needed")
    assert "w[x=1]: boom" in core.tasks["pick"].error
    assert sorted(core.stops()) == ["w[x=2]", "w[x=3]", "w[x=4]"]


def test_an_unmet_quorum_said_while_branches_run_counts_what_is_final():
    # Three branches fail before the two that succeed end: the message is written then, so it
    # must not read "0 of 5 succeeded" once two have.
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3, 4, 5]}},
        "pick": {"uses": NOOP, "with": {"got": "${w[*]}"}, "min_success": 3},
    }, capacity={"cpus": 5}, on_failure="continue")
    core.start(0)
    assert len(step(core, 1)) == 5
    for name in ("w[x=3]", "w[x=4]", "w[x=5]"):
        core.failed(name, "boom", 2)
    for name in ("w[x=1]", "w[x=2]"):
        core.succeeded(name, 1, 3)
    error = core.tasks["pick"].error
    assert "3 of 5 branches of w did not succeed, so at most 2 can" in error, error
    assert "0 of 5 branches of w succeeded" not in error
    assert [core.tasks[f"w[x={x}]"].state for x in (1, 2)] == [State.SUCCEEDED, State.SUCCEEDED]


def test_wait_quorum_starts_the_fan_in_as_soon_as_the_quorum_succeeded():
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3]}, "with": {"x": "${item.x}"}},
        "first": {"uses": NOOP, "with": {"got": "${w[*]}"}, "min_success": 2, "wait": "quorum"},
    })
    core.start(0)
    tasks = step(core, 1)
    core.succeeded(tasks[2].name, 3, 2)
    assert step(core, 3) == []
    core.succeeded(tasks[0].name, 1, 4)
    (first,) = step(core, 5)
    assert first.inputs == {"got": [1, 3]}


def test_retries_back_off_exponentially_then_fail():
    core = scheduler({"t": {"uses": NOOP, "retries": 2, "retry_backoff": 1.5}})
    core.start(0)
    (task,) = step(core, 0)
    core.failed(task.name, "e1", 10)
    assert core.tasks["t"].state is State.RETRYING and core.next_wakeup() == 11.5
    assert step(core, 11.4) == []
    (task,) = step(core, 11.5)
    assert task.attempt == 2
    core.failed(task.name, "e2", 20)
    assert core.next_wakeup() == 23.0  # 1.5 * 2
    (task,) = step(core, 23)
    core.failed(task.name, "e3", 30)
    assert core.tasks["t"].state is State.FAILED and core.tasks["t"].attempt == 3
    assert core.outcome == "failed" and core.done


def test_a_retried_task_that_succeeds_gives_one_output():
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2]}, "with": {"x": "${item.x}"}, "retries": 1, "retry_backoff": 0},
        "sum": {"uses": NOOP, "with": {"v": "${w[*]}"}},
    })
    calls = {}

    def flaky(task):
        calls[task.name] = calls.get(task.name, 0) + 1
        if task.name == "w[x=1]" and calls[task.name] == 1:
            return False, "transient"
        return True, task.inputs.get("x", task.inputs)

    assert run_all(core, flaky)["sum"].inputs == {"v": [1, 2]}
    assert calls["w[x=1]"] == 2


def test_fail_fast_cancels_running_siblings_and_pending_work():
    core = scheduler({
        "w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3]}},
        "after": {"uses": NOOP, "with": {"v": "${w[*]}"}},
    }, capacity={"cpus": 2})
    core.start(0)
    a, b = step(core, 1)
    core.failed(a.name, "boom", 2)
    assert core.stops() == [b.name]
    assert core.tasks["w[x=3]"].state is State.CANCELLED
    assert step(core, 3) == []
    core.cancelled(b.name, 4, "stopped")
    assert core.done and core.outcome == "failed"
    assert core.tasks["after"].state is State.CANCELLED


def test_continue_policy_skips_only_what_depends_on_the_failure():
    core = scheduler({
        "bad": {"uses": NOOP},
        "good": {"uses": NOOP},
        "after_bad": {"uses": NOOP, "with": {"v": "${bad}"}},
        "after_good": {"uses": NOOP, "with": {"v": "${good}"}},
    }, on_failure="continue")
    run_all(core, lambda t: (t.name != "bad", "boom" if t.name == "bad" else 1))
    assert core.tasks["after_good"].state is State.SUCCEEDED
    assert core.tasks["after_bad"].state is State.SKIPPED
    assert core.tasks["after_bad"].reason == "upstream bad failed"
    assert core.outcome == "failed"


def test_when_false_skips_the_step_and_its_dependents_and_says_why():
    core = scheduler({
        "a": {"uses": NOOP, "when": "${params.go} and ${params.k} > 1"},
        "b": {"uses": NOOP, "with": {"v": "${a}"}},
        "c": {"uses": NOOP},
    }, params={"go": True, "k": 1})
    run_all(core, ok())
    assert core.tasks["a"].state is State.SKIPPED
    assert core.tasks["a"].reason == "when: ${params.go} and ${params.k} > 1 is false"
    assert core.tasks["b"].reason == "a was skipped"
    assert core.tasks["c"].state is State.SUCCEEDED and core.outcome == "succeeded"


def test_when_can_use_an_upstream_output():
    core = scheduler({"a": {"uses": NOOP}, "b": {"uses": NOOP, "when": "len(${a}) > 1"}})
    run_all(core, lambda t: (True, [1, 2]))
    assert core.tasks["b"].state is State.SUCCEEDED


def test_needs_orders_steps_without_passing_data():
    core = scheduler({"a": {"uses": NOOP}, "b": {"uses": NOOP, "needs": ["a"]}})
    assert list(run_all(core, ok())) == ["a", "b"]


def test_step_parallelism_and_global_limit_are_respected():
    core = scheduler({"w": {"uses": NOOP, "fan_out": {"x": list(range(6))}, "parallelism": 2}},
                     capacity={"cpus": 10})
    core.start(0)
    assert len(step(core, 1)) == 2
    core2 = scheduler({"w": {"uses": NOOP, "fan_out": {"x": list(range(6))}}}, capacity={"cpus": 10}, parallelism=3)
    core2.start(0)
    assert len(step(core2, 1)) == 3


def test_resources_admit_only_what_fits():
    core = scheduler({
        "big": {"uses": NOOP, "fan_out": {"x": [1, 2, 3]}, "resources": {"cpus": 2, "memory": "1Gi"}},
    }, capacity={"cpus": 4, "memory": 1.5 * 2**30})
    core.start(0)
    first = step(core, 1)
    assert len(first) == 1  # memory, not cores, is the limit here
    core.succeeded(first[0].name, 1, 2)
    assert len(step(core, 3)) == 1


def test_a_missing_output_field_fails_the_consumer_with_the_keys_it_has():
    core = scheduler({"a": {"uses": NOOP}, "b": {"uses": NOOP, "with": {"v": "${a.tset}"}}})
    run_all(core, lambda t: (True, {"test": 1, "train": 2}))
    assert core.tasks["b"].error == "${a.tset}: ${a} has no key 'tset' (it has: test, train)"


def test_cancel_stops_everything_and_records_cancelled():
    core = scheduler({"w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3]}}}, capacity={"cpus": 2})
    core.start(0)
    running = step(core, 1)
    core.cancel(2, "cancelled by SIGINT")
    assert sorted(core.stops()) == sorted(t.name for t in running)
    for t in running:
        core.cancelled(t.name, 3, "cancelled by SIGINT")
    assert core.done and core.outcome == "cancelled"
    assert {t.state for t in core.tasks.values()} == {State.CANCELLED}


def test_every_state_change_is_an_event_in_order():
    core = scheduler({"a": {"uses": NOOP, "retries": 1, "retry_backoff": 0}})
    core.start(0)
    (t,) = step(core, 1)
    core.failed(t.name, "x", 2)
    (t,) = step(core, 2)
    core.succeeded(t.name, 5, 3)
    states = [(e.state.value, e.attempt) for e in core.events()]
    assert states == [("pending", 0), ("running", 1), ("retrying", 1), ("running", 2), ("succeeded", 2)]


def test_reused_tasks_complete_without_capacity():
    core = scheduler({"w": {"uses": NOOP, "fan_out": {"x": [1, 2, 3]}, "with": {"x": "${item.x}"}}},
                     capacity={"cpus": 1})
    core.start(0)
    started = step(core, 1, reuse=lambda t: t.inputs["x"] if t.inputs["x"] != 2 else None)
    assert [t.name for t in started] == ["w[x=2]"]
    assert core.tasks["w[x=1]"].state is State.SUCCEEDED and core.tasks["w[x=1]"].cached


@pytest.mark.parametrize("value,label", [("a,b", '"a,b"'), (1.5, "1.5"), (None, "null"), (True, "true")])
def test_item_labels_stay_readable_and_unambiguous(value, label):
    core = scheduler({"w": {"uses": NOOP, "fan_out": {"v": [value]}}})
    core.start(0)
    assert list(core.tasks) == [f"w[v={label}]"]


def test_misuse_is_refused_with_a_clear_error():
    core = scheduler({"a": {"uses": NOOP}, "b": {"uses": NOOP, "with": {"v": "${a}"}}})
    core.start(0)
    with pytest.raises(ValueError, match="a cannot succeed: it is pending, not running"):
        core.succeeded("a", 1, 1)
    assert [t.name for t in step(core, 1)] == ["a"]
    with pytest.raises(ValueError, match="a cannot be reused: it is running"):
        core.reused("a", 1, 1)
    with pytest.raises(ValueError, match="no task 'nope' in this run"):
        core.failed("nope", "boom", 1)
    core.succeeded("a", 1, 2)
    with pytest.raises(ValueError, match="a cannot succeed: it is succeeded"):
        core.succeeded("a", 1, 3)  # a late second answer
    with pytest.raises(ValueError, match="b cannot be reused"):
        core.reused("b", 1, 3)  # not handed out by ready() yet


def test_records_handed_out_never_change():
    core = scheduler({"a": {"uses": NOOP, "with": {"v": 1}}})
    core.start(0)
    (ready,) = core.ready(1)
    (started,) = core.admit(1)
    core.succeeded("a", 5, 2)
    assert (ready.state, ready.attempt, started.state, started.attempt) == (State.PENDING, 0, State.RUNNING, 1)
    with pytest.raises(AttributeError):
        started.state = State.FAILED
    assert core.tasks["a"].output == 5 and core.tasks["a"].inputs is None  # spent once it ended


def test_ready_hands_out_at_most_a_window_of_tasks_waiting_to_start():
    core = scheduler({"w": {"uses": NOOP, "fan_out": {"x": list(range(10))}, "with": {"x": "${item.x}"}}},
                     capacity={"cpus": 2}, window=4)
    core.start(0)
    first = core.ready(1)
    assert [t.inputs["x"] for t in first] == [0, 1, 2, 3] and core.ready(1) == []
    core.reused(first[0].name, 0, 1)
    assert [t.inputs["x"] for t in core.ready(1)] == [4]
    assert [t.inputs["x"] for t in core.admit(1)] == [1, 2]
    assert [t.inputs["x"] for t in core.ready(1)] == [5, 6]


def test_a_service_restarts_until_its_budget_is_spent():
    core = scheduler({"s": {"uses": NOOP, "kind": "service", "restarts": 1}, "after": {"uses": NOOP, "with": {"u": "${s}"}}})
    core.start(0)
    assert [t.name for t in step(core, 1)] == ["s"]
    core.serving("s", {"url": "u1"}, 2)
    (after,) = step(core, 3)
    assert after.inputs == {"u": {"url": "u1"}}
    again = core.restarted("s", 4, "died")
    assert again.attempt == 2 and again.state is State.SERVING
    assert core.restarted("s", 5, "died again") is None
    assert core.tasks["s"].state is State.FAILED and "gave up after 1 restarts" in core.tasks["s"].error
