"""Recording a run's events: each batch of state changes becomes rows for a few statements,
compiled once per database and sent with the driver's executemany (the engine's hot path)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from fanflow.stores.schema import artifacts, attempts, cache, lineage, runs, tasks
from fanflow.vocab.manifest import ARTIFACT_KEY, artifact_refs
from fanflow.vocab.states import TERMINAL, Event, State


class Prepared:
    """A statement compiled once for one database, run with the driver's executemany."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = compiled.positiontup if dialect.positional else None

    def params(self, rows: list[dict]) -> list:
        if self.order is None:
            return rows
        return [tuple(row[name] for name in self.order) for row in rows]


def _bind(table, names):
    return {name: sa.bindparam(name) for name in names}


def _insert_ignoring_duplicates(table, dialect_name: str):
    columns = [c.name for c in table.columns]
    if dialect_name in ("sqlite", "postgresql"):
        module = __import__(f"sqlalchemy.dialects.{dialect_name}", fromlist=["insert"])
        return module.insert(table).values(_bind(table, columns)).on_conflict_do_nothing()
    return table.insert().values(_bind(table, columns))


def _task_where(table, task_column):
    return sa.and_(table.c.run_id == sa.bindparam("b_run"), task_column == sa.bindparam("b_task"))


def statement_for(name: str, dialect_name: str):
    if name == "task_new":
        return tasks.insert().values(_bind(tasks, _TASK_NEW_COLUMNS))
    if name == "task_running":
        return (
            tasks.update()
            .where(_task_where(tasks, tasks.c.name))
            .values(
                state=sa.bindparam("b_state"),
                attempts=sa.bindparam("b_attempts"),
                started=sa.func.coalesce(tasks.c.started, sa.bindparam("b_started")),
            )
        )
    if name == "task_finished":
        return (
            tasks.update()
            .where(_task_where(tasks, tasks.c.name))
            .values(
                state=sa.bindparam("b_state"),
                attempts=sa.bindparam("b_attempts"),
                output=sa.bindparam("b_output"),
                error=sa.bindparam("b_error"),
                reason=sa.bindparam("b_reason"),
                cached=sa.bindparam("b_cached"),
                cache_key=sa.func.coalesce(sa.bindparam("b_cache_key"), tasks.c.cache_key),
                ended=sa.func.coalesce(sa.bindparam("b_ended"), tasks.c.ended),
            )
        )
    if name == "attempt_new":
        return attempts.insert().values(_bind(attempts, [c.name for c in attempts.columns]))
    if name == "attempt_end":
        return (
            attempts.update()
            .where(_task_where(attempts, attempts.c.task), attempts.c.attempt == sa.bindparam("b_attempt"))
            .values(
                state=sa.bindparam("b_state"),
                ended=sa.bindparam("b_ended"),
                exit_reason=sa.bindparam("b_exit_reason"),
                error=sa.bindparam("b_error"),
                traceback=sa.bindparam("b_traceback"),
                worker=sa.bindparam("b_worker"),
            )
        )
    if name == "cache_lookup":
        return sa.select(cache.c.output).where(cache.c.key == sa.bindparam("b_key"))
    if name == "heartbeat":
        return (
            runs.update().where(runs.c.id == sa.bindparam("b_run")).values(heartbeat=sa.bindparam("b_time"))
        )
    table = {"artifact": artifacts, "lineage": lineage, "cache": cache}[name]
    return _insert_ignoring_duplicates(table, dialect_name)


_TASK_NEW_COLUMNS = ["run_id", "name", "step", "seq", "item", "state", "attempts", "cached"]


class EventRows:
    """The rows a batch of events turns into, by statement, in the order they must run."""

    ORDER = (
        "task_new",
        "task_running",
        "attempt_new",
        "task_finished",
        "attempt_end",
        "artifact",
        "lineage",
        "cache",
    )

    def __init__(self):
        self.rows: dict[str, list] = {name: [] for name in self.ORDER}
        self._artifacts: set[str] = set()
        self._lineage: set[tuple] = set()

    def in_order(self):
        return ((name, self.rows[name]) for name in self.ORDER)

    def add(self, run_id: str, e: Event, seq: int) -> int:
        """Add one event's rows; returns how many tasks it created (0 or 1)."""
        detail = e.detail
        if e.state is State.PENDING:
            item = json.dumps(detail["item"]) if "item" in detail else None
            self.rows["task_new"].append(
                {
                    "run_id": run_id,
                    "name": e.task,
                    "step": e.step,
                    "seq": seq,
                    "item": item,
                    "state": "pending",
                    "attempts": 0,
                    "cached": False,
                }
            )
            return 1
        restart = "restart" in detail
        if e.state is State.RUNNING or restart:
            self.rows["task_running"].append(
                {
                    "b_run": run_id,
                    "b_task": e.task,
                    "b_state": "running",
                    "b_attempts": e.attempt,
                    "b_started": e.time,
                }
            )
            self.rows["attempt_new"].append(
                {
                    "run_id": run_id,
                    "task": e.task,
                    "attempt": e.attempt,
                    "state": "running",
                    "started": e.time,
                    "ended": None,
                    "exit_reason": None,
                    "error": None,
                    "traceback": None,
                    "worker": None,
                }
            )
            if not restart:
                return 0
        output = detail.get("output")
        state = "serving" if restart else e.state.value
        self.rows["task_finished"].append(
            {
                "b_run": run_id,
                "b_task": e.task,
                "b_state": state,
                "b_attempts": e.attempt,
                "b_output": json.dumps(output) if output is not None else None,
                "b_error": detail.get("error"),
                "b_reason": detail.get("reason"),
                "b_cached": bool(detail.get("cached")),
                "b_cache_key": detail.get("cache_key"),
                "b_ended": e.time if state in TERMINAL else None,
            }
        )
        if e.attempt and (restart or e.state is not State.SERVING):
            self.rows["attempt_end"].append(
                {
                    "b_run": run_id,
                    "b_task": e.task,
                    "b_attempt": e.attempt - 1 if restart else e.attempt,
                    "b_state": "exited" if restart else ("cached" if detail.get("cached") else state),
                    "b_ended": e.time,
                    "b_exit_reason": detail.get("exit_reason"),
                    "b_error": detail.get("error"),
                    "b_traceback": detail.get("traceback"),
                    "b_worker": detail.get("worker"),
                }
            )
        if e.state is State.SUCCEEDED and output is not None:
            self._outputs(run_id, e, output)
        return 0

    def _outputs(self, run_id: str, e: Event, output) -> None:
        for ref in artifact_refs(output):
            digest = ref[ARTIFACT_KEY]
            if digest not in self._artifacts:
                self._artifacts.add(digest)
                self.rows["artifact"].append(
                    {
                        "digest": digest,
                        "format": ref.get("format"),
                        "suffix": ref.get("suffix", ""),
                        "size": ref.get("size"),
                        "created": e.time,
                    }
                )
            self._link(run_id, e.task, digest, "output")
        for digest in e.detail.get("inputs", ()):
            self._link(run_id, e.task, digest, "input")
        if e.detail.get("cache_key") and not e.detail.get("cached"):
            self.rows["cache"].append(
                {
                    "key": e.detail["cache_key"],
                    "output": json.dumps(output),
                    "run_id": run_id,
                    "task": e.task,
                    "created": e.time,
                }
            )

    def _link(self, run_id: str, task: str, digest: str, role: str) -> None:
        key = (task, digest, role)
        if key not in self._lineage:
            self._lineage.add(key)
            self.rows["lineage"].append({"run_id": run_id, "task": task, "digest": digest, "role": role})
