"""The run page's workflow graph: one node per step (a fan-out is one node with its branches
counted by state), laid out left to right in layers, and each step's live status (its state,
its branch counts, its quorum, its services' URLs) as plain data that the page draws in SVG
and the live stream sends again as it changes.

The nodes and edges are the exporters' (``fanflow.exporters.graph.describe``: fan-out axes,
collecting edges, quorum labels); only the positions are worked out here, Sugiyama-style:
a step's layer is its longest path from a source, and each layer is ordered by the mean
position of the steps it waits for."""

from __future__ import annotations

from dataclasses import dataclass, field

from fanflow.engine.quorum import required
from fanflow.exporters import graph as drawing
from fanflow.spec import graph
from fanflow.spec.model import Workflow

# The order of a progress bar's segments, and the states a step can be in.
STATE_ORDER = ("succeeded", "serving", "running", "retrying", "pending", "failed", "skipped", "cancelled")
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 210, 92, 64, 24, 12
BAR_W = NODE_W - 20


@dataclass
class StepStatus:
    """What a step's node shows, as it changes."""

    state: str  # waiting (no task yet), pending, running, serving, succeeded, failed, skipped, cancelled
    counts: dict[str, int]
    quorum: str | None = None  # "quorum ≥ 2: 3 of 4 ok" (of the branches it collects)
    quorum_state: str | None = None  # met, waiting, lost
    urls: list[str] = field(default_factory=list)  # services, while serving

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def segments(self) -> list[tuple[str, float, float]]:
        """(state, x, width) of the progress bar, in STATE_ORDER."""
        total, x, found = self.total, 0.0, []
        for state in STATE_ORDER:
            count = self.counts.get(state, 0)
            if count and total:
                width = BAR_W * count / total
                found.append((state, x, width))
                x += width
        return found

    @property
    def summary(self) -> str:
        """One line: "3 of 4 succeeded · 1 running", or the one task's state."""
        total = self.total
        if not total:
            return "not started"
        if total == 1:
            return next(iter(self.counts))
        done = self.counts.get("succeeded", 0)
        rest = [f"{self.counts[s]} {s}" for s in STATE_ORDER if s != "succeeded" and self.counts.get(s)]
        return " · ".join([f"{done} of {total} succeeded", *rest])

    def as_json(self) -> dict:
        return {"state": self.state, "counts": self.counts, "summary": self.summary, "quorum": self.quorum,
                "quorum_state": self.quorum_state, "urls": self.urls,
                "segments": [[state, round(x, 2), round(w, 2)] for state, x, w in self.segments()]}


@dataclass
class Node:
    """A step drawn: the exporters' node (name, fan-out axes, service) at a place."""

    step: drawing.Node
    x: float
    y: float
    status: StepStatus
    width: int = NODE_W
    height: int = NODE_H

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def function(self) -> str:
        return self.step.label.split("\n", 1)[-1]


@dataclass
class Edge:
    """The exporters' edge (collecting all branches or not, its quorum label) as a curve."""

    link: drawing.Edge
    path: str
    label_x: float
    label_y: float


@dataclass
class GraphView:
    width: float
    height: float
    nodes: list[Node]
    edges: list[Edge]


def step_state(counts: dict[str, int]) -> str:
    """One state for a step from its tasks' states: trouble first, then activity."""
    if not counts:
        return "waiting"
    for state in ("failed", "running", "retrying", "serving", "pending"):
        if counts.get(state):
            return "running" if state == "retrying" else state
    if counts.get("cancelled"):
        return "cancelled"
    if counts.get("succeeded"):
        return "succeeded"
    return "skipped"


def statuses(workflow: Workflow, counts: dict[str, dict[str, int]],
             urls: dict[str, list[str]] | None = None) -> dict[str, StepStatus]:
    """Every step's status from its tasks' counts by state (``History.step_counts``) and the
    URLs of its serving tasks."""
    found = {}
    for name, step in workflow.steps.items():
        mine = counts.get(name, {})
        status = StepStatus(step_state(mine), dict(mine), urls=list((urls or {}).get(name, [])))
        if step.min_success is not None:
            sources = graph.fans_in(workflow, name)
            branches = [counts.get(s, {}) for s in sources]
            total = sum(sum(c.values()) for c in branches)
            ok = sum(c.get("succeeded", 0) + c.get("serving", 0) for c in branches)
            lost = sum(c.get(s, 0) for c in branches for s in ("failed", "skipped", "cancelled"))
            need = required(step.min_success, total)
            if not total:
                status.quorum_state = "waiting"  # its branches are not known yet
            else:
                status.quorum_state = "met" if ok >= need else "lost" if total - lost < need else "waiting"
            status.quorum = f"quorum ≥ {step.min_success}: " + (f"{ok} of {total} ok" if total else "waiting")
        found[name] = status
    return found


def _centre(ups: list[float], position: int) -> tuple[float, int]:
    """Where a step goes in its layer: the mean row of the steps it waits for."""
    return (sum(ups) / len(ups) if ups else position, position)


def layout(workflow: Workflow, status: dict[str, StepStatus]) -> GraphView:
    described, links = drawing.describe(workflow)
    layer: dict[str, int] = {}
    for name in workflow.steps:  # declared order lists a step after the steps it waits for
        ups = graph.upstream(workflow, name)
        layer[name] = 1 + max((layer[u] for u in ups if u in layer), default=-1)
    columns: dict[int, list[str]] = {}
    for name in workflow.steps:
        columns.setdefault(layer[name], []).append(name)
    row: dict[str, float] = {}
    for index in sorted(columns):
        order = {name: _centre([row[u] for u in graph.upstream(workflow, name) if u in row], position)
                 for position, name in enumerate(columns[index])}
        columns[index] = sorted(columns[index], key=order.__getitem__)
        for position, name in enumerate(columns[index]):
            row[name] = position
    tallest = max(len(c) for c in columns.values())
    nodes = []
    for info in described:
        column = columns[layer[info.name]]
        offset = (tallest - len(column)) * (NODE_H + GAP_Y) / 2
        nodes.append(Node(info, MARGIN + layer[info.name] * (NODE_W + GAP_X),
                          MARGIN + offset + column.index(info.name) * (NODE_H + GAP_Y), status[info.name]))
    where = {node.name: node for node in nodes}
    edges = []
    for link in links:
        a, b = where[link.source], where[link.target]
        x1, y1, x2, y2 = a.x + NODE_W, a.y + NODE_H / 2, b.x, b.y + NODE_H / 2
        bend = (x2 - x1) / 2
        edges.append(Edge(link, f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}",
                          (x1 + x2) / 2, (y1 + y2) / 2 - 5))
    width = MARGIN * 2 + (max(layer.values()) + 1) * (NODE_W + GAP_X) - GAP_X
    height = MARGIN * 2 + tallest * (NODE_H + GAP_Y) - GAP_Y
    return GraphView(width, height, nodes, edges)
