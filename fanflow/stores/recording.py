"""Recording a run's events: the engine's hot path.

A batch of state changes becomes rows for a few statements, compiled once per database and
sent with the driver's executemany. Within a batch each task gets one row: a task created,
started and finished in the same batch is one insert, not an insert and two updates. An
attempt is written once, when it ends (the task's own row says that it is running). Outputs
are encoded once per batch, by one encoder, and shared by the task's row and its cache entry.
"""

from __future__ import annotations

import json

from fanflow.stores import plain_sqlite
from fanflow.vocab.manifest import ARTIFACT_KEY, artifact_refs
from fanflow.vocab.states import TERMINAL, Event, State

LOOKUP_CHUNK = plain_sqlite.LOOKUP_CHUNK


# The columns a task row is written with; an update sets the same ones (``started`` and
# ``cache_key`` keep what the row had when the update brings none).
_INSERT_KEYS = ("run_id", "name", "step", "seq", "item")
# In the table's column order, which is the order of the compiled statements' parameters:
# rows go to the driver as they are.
TASK_FIELDS = ("state", "attempts", "output", "error", "reason", "cached", "cache_key", "started", "ended")
# Where each field stands in a row (the insert's keys first, then the fields).
_STATE, _ATTEMPTS, _OUTPUT, _ERROR, _REASON, _CACHED, _KEY, _STARTED, _ENDED = range(
    len(_INSERT_KEYS), len(_INSERT_KEYS) + len(TASK_FIELDS))
_ATTEMPT_COLUMNS = ("run_id", "task", "attempt", "state", "started", "ended", "exit_reason", "error",
                    "traceback", "worker")


RUN_COLUMNS = ("id", "workflow", "source", "spec", "params", "code_version", "executor", "home", "state",
               "started", "heartbeat", "host", "pid", "resumed_from")  # a run's row as ``begin`` writes it
PROGRESS_COLUMNS = ("run_id", "task", "attempt", "done", "total", "unit", "metrics", "message", "history",
                    "updated")


def statement_for(name: str, dialect_name: str):
    """The statement behind each kind of row, with its parameters named in row order."""
    import sqlalchemy as sa

    from fanflow.stores.schema import artifacts, attempts, cache, leases, lineage, progress, runs, tasks

    if name == "run_new":
        return runs.insert().values({c: sa.bindparam(f"p_{c}") for c in RUN_COLUMNS}), [f"p_{c}" for c in RUN_COLUMNS]
    if name == "run_end":
        values = {c: sa.bindparam(f"p_{c}") for c in ("state", "error", "ended")}
        statement = runs.update().where(runs.c.id == sa.bindparam("p_run")).values(values)
        return statement, ["p_state", "p_error", "p_ended", "p_run"]
    if name == "lease_end":
        return leases.delete().where(leases.c.owner == sa.bindparam("p_owner")), ["p_owner"]
    if name == "task_count":
        statement = sa.select(sa.func.count()).select_from(tasks).where(tasks.c.run_id == sa.bindparam("p_run"))
        return statement, ["p_run"]
    if name == "progress_drop":
        statement = progress.delete().where(progress.c.run_id == sa.bindparam("p_run"),
                                            progress.c.task == sa.bindparam("p_task"))
        return statement, ["p_run", "p_task"]
    if name == "progress_new":
        statement = progress.insert().values({c: sa.bindparam(f"p_{c}") for c in PROGRESS_COLUMNS})
        return statement, [f"p_{c}" for c in PROGRESS_COLUMNS]
    if name == "task_new":
        columns = [*_INSERT_KEYS, *TASK_FIELDS]
        return tasks.insert().values({c: sa.bindparam(f"p_{c}") for c in columns}), [f"p_{c}" for c in columns]
    if name == "task_change":
        values = {c: sa.bindparam(f"p_{c}") for c in TASK_FIELDS}
        values["started"] = sa.func.coalesce(tasks.c.started, sa.bindparam("p_started"))
        values["cache_key"] = sa.func.coalesce(sa.bindparam("p_cache_key"), tasks.c.cache_key)
        statement = (
            tasks.update()
            .where(tasks.c.run_id == sa.bindparam("p_run"), tasks.c.name == sa.bindparam("p_task"))
            .values(values)
        )
        return statement, [*(f"p_{c}" for c in TASK_FIELDS), "p_run", "p_task"]
    if name == "attempt":
        statement = attempts.insert().values({c: sa.bindparam(f"p_{c}") for c in _ATTEMPT_COLUMNS})
        return statement, [f"p_{c}" for c in _ATTEMPT_COLUMNS]
    if name == "cache_lookup":
        keys = [sa.bindparam(f"p_k{i}") for i in range(LOOKUP_CHUNK)]
        return sa.select(cache.c.key, cache.c.output).where(cache.c.key.in_(keys)), [
            f"p_k{i}" for i in range(LOOKUP_CHUNK)
        ]
    if name == "heartbeat":
        statement = runs.update().where(runs.c.id == sa.bindparam("p_run")).values(heartbeat=sa.bindparam("p_time"))
        return statement, ["p_time", "p_run"]
    table = {"artifact": artifacts, "lineage": lineage, "cache": cache}[name]
    columns = [c.name for c in table.columns]
    values = {c: sa.bindparam(f"p_{c}") for c in columns}
    if dialect_name in ("sqlite", "postgresql"):
        module = __import__(f"sqlalchemy.dialects.{dialect_name}", fromlist=["insert"])
        statement = module.insert(table).values(values).on_conflict_do_nothing()
    else:
        statement = table.insert().values(values)
    return statement, [f"p_{c}" for c in columns]


class Statement:
    """One statement compiled once for one database: rows are tuples in the statement's
    parameter order, turned into what the driver's paramstyle wants. On SQLite the text is
    ``plain_sqlite``'s, with no SQLAlchemy to import; elsewhere SQLAlchemy compiles it."""

    def __init__(self, name: str, dialect=None):
        self._convert = self._named = None
        if dialect is None:
            self.sql = plain_sqlite.STATEMENTS[name]
            return
        statement, names = statement_for(name, dialect.name)
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        if dialect.positional:
            where = {n: i for i, n in enumerate(names)}
            order = [where[n] for n in compiled.positiontup]
            self._convert = None if order == list(range(len(names))) else order
        else:
            self._named = names

    def params(self, rows: list[tuple]) -> list:
        if self._named is not None:
            names = self._named
            return [dict(zip(names, row, strict=True)) for row in rows]
        if self._convert is not None:
            order = self._convert
            return [tuple(row[i] for i in order) for row in rows]
        return rows


_encode_container = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_output(value) -> str:
    """A step's output as JSON text (one encoder for every output; plain scalars directly)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return json.encoder.encode_basestring(value)
    return _encode_container(value)


def encode_item(item: dict) -> str:
    """A fan-out item as JSON text; an item of one axis with a number or a text, directly
    (axis names are plain names: nothing in them to escape)."""
    if len(item) == 1:
        for axis, value in item.items():
            if type(value) is int or type(value) is str:
                return f'{{"{axis}":{encode_output(value)}}}'
    return _encode_container(item)


class EventRows:
    """The rows a batch of events turns into, by statement, in the order they must run."""

    ORDER = ("task_new", "task_change", "attempt", "artifact", "lineage", "cache")

    def __init__(self, run_id: str, seq: int, started: dict[str, float], waiting: dict[str, list]):
        self.run_id = run_id
        self.seq = seq  # the next task's creation number
        self.started = started  # task -> when its running attempt started (kept across batches)
        # Tasks handed out that nothing has happened to yet (kept across batches): their row is
        # written with their next change, as one insert (``unwritten`` writes the rest).
        self.waiting = waiting
        self.new: dict[str, list] = {}  # tasks first written in this batch: their insert row
        self.changed: dict[str, list] = {}  # tasks created earlier: their update row
        self.attempts: list[tuple] = []
        self.artifacts: dict[str, tuple] = {}
        self.lineage: dict[tuple, tuple] = {}
        self.cache: list[tuple] = []

    def in_order(self):
        key = len(_INSERT_KEYS)
        yield "task_new", [tuple(row) for row in self.new.values()]
        yield "task_change", [(*row[key:], self.run_id, name) for name, row in self.changed.items()]
        yield "attempt", self.attempts
        yield "artifact", list(self.artifacts.values())
        yield "lineage", list(self.lineage.values())
        yield "cache", self.cache

    def add(self, e: Event) -> None:
        detail = e.detail
        if e.state is State.PENDING:
            item = encode_item(detail["item"]) if "item" in detail else None
            self.waiting[e.task] = [self.run_id, e.task, e.step, self.seq, item,
                                    "pending", 0, None, None, None, False, None, None, None]
            self.seq += 1
            return
        row = self._row(e.task)
        restart = "restart" in detail
        if restart:  # a service came back: its previous attempt ended, a new one runs
            self._attempt(e, e.attempt - 1, "exited", self.started.pop(e.task, None))
        if e.state is State.RUNNING or restart:
            self.started[e.task] = e.time
            if row[_STARTED] is None:
                row[_STARTED] = e.time
            row[_OUTPUT] = row[_ERROR] = row[_REASON] = row[_ENDED] = None
            row[_CACHED] = False
        row[_STATE], row[_ATTEMPTS] = e.state.value, e.attempt
        if e.state is State.RUNNING:
            return
        output = detail.get("output")
        text = encode_output(output) if output is not None else None
        row[_OUTPUT], row[_ERROR], row[_REASON] = text, detail.get("error"), detail.get("reason")
        row[_CACHED] = bool(detail.get("cached"))
        if detail.get("cache_key"):
            row[_KEY] = detail["cache_key"]
        row[_ENDED] = e.time if e.state in TERMINAL else None
        if e.state is not State.SERVING:
            started = self.started.pop(e.task, None)
            if started is not None:
                state = "cached" if detail.get("cached") else e.state.value
                self._attempt(e, e.attempt, state, started)
        if e.state is State.SUCCEEDED and output is not None:
            self._outputs(e, output, text)

    def unwritten(self) -> None:
        """Write the rows of the tasks still waiting (the run is ending)."""
        self.new.update(self.waiting)
        self.waiting.clear()

    def _row(self, task: str) -> list:
        row = self.new.get(task)
        if row is not None:
            return row
        row = self.waiting.pop(task, None)
        if row is not None:
            self.new[task] = row
            return row
        row = self.changed.get(task)
        if row is None:
            # Nothing to change yet: ``started`` and ``cache_key`` are kept (coalesce).
            row = self.changed[task] = [None] * len(_INSERT_KEYS) + [None] * len(TASK_FIELDS)
        return row

    def _attempt(self, e: Event, number: int, state: str, started: float | None) -> None:
        if started is None:
            return  # it never ran (its inputs could not be resolved)
        d = e.detail
        self.attempts.append((self.run_id, e.task, number, state, started, e.time, d.get("exit_reason"),
                              d.get("error"), d.get("traceback"), d.get("worker")))

    def _outputs(self, e: Event, output, text: str) -> None:
        for ref in artifact_refs(output):
            digest = ref[ARTIFACT_KEY]
            if digest not in self.artifacts:
                self.artifacts[digest] = (digest, ref.get("format"), ref.get("suffix", ""), ref.get("size"), e.time)
            self._link(e.task, digest, "output")
        for digest in e.detail.get("inputs", ()):
            self._link(e.task, digest, "input")
        if e.detail.get("cache_key") and not e.detail.get("cached"):
            self.cache.append((e.detail["cache_key"], text, self.run_id, e.task, e.time))

    def _link(self, task: str, digest: str, role: str) -> None:
        self.lineage.setdefault((task, digest, role), (self.run_id, task, digest, role))
