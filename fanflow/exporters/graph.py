"""Draw a workflow as Mermaid or Graphviz DOT, with fan-outs and fan-ins drawn as such.

A fanned-out step is a stacked node labelled with its axes (``× model: 4``, or ``× select``
for a dynamic fan-out); an edge that collects every branch is drawn thick and labelled
``[*]``; a quorum shows as ``≥ 2`` on the collecting edge; services are drawn round."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from fanflow.spec import graph
from fanflow.spec.model import Workflow
from fanflow.spec.refs import whole_ref


@dataclass
class Node:
    name: str
    label: str
    fan_out: str | None  # e.g. "model: 4" or "select" (dynamic)
    service: bool


@dataclass
class Edge:
    source: str
    target: str
    collect: bool
    label: str


def describe(workflow: Workflow) -> tuple[list[Node], list[Edge]]:
    nodes, edges = [], []
    for name, step in workflow.steps.items():
        fan = None
        if step.fan_out:
            parts = []
            for axis, values in step.fan_out.items():
                ref = whole_ref(values) if isinstance(values, str) else None
                parts.append(f"{axis}: {ref}" if ref else f"{axis}: {len(values)}")
            fan = ", ".join(parts)
        function = step.uses.partition(":")[2]
        nodes.append(Node(name, f"{name}\n{function}", fan, step.kind == "service"))
        collected = set(graph.fans_in(workflow, name))
        for up in graph.upstream(workflow, name):
            collect = up in collected
            label = "[*]" if collect else ""
            if collect and step.min_success is not None:
                label += f" ≥ {step.min_success}"
            edges.append(Edge(up, name, collect, label.strip()))
    return nodes, edges


def mermaid(workflow: Workflow) -> str:
    nodes, edges = describe(workflow)
    lines = ["flowchart LR"]
    for node in nodes:
        text = node.label.replace("\n", "<br/>")
        if node.fan_out:
            text += f"<br/>× {node.fan_out}"
        text = text.replace('"', "'")
        shape = ('(["', '"])') if node.service else (('[["', '"]]') if node.fan_out else ('["', '"]'))
        lines.append(f"    {_id(node.name)}{shape[0]}{text}{shape[1]}")
    for edge in edges:
        arrow = "==>" if edge.collect else "-->"
        label = f'|"{edge.label}"|' if edge.label else ""
        lines.append(f"    {_id(edge.source)} {arrow}{label} {_id(edge.target)}")
    return "\n".join(lines) + "\n"


def dot(workflow: Workflow) -> str:
    nodes, edges = describe(workflow)
    lines = [
        f'digraph "{workflow.name}" {{',
        "    rankdir=LR;",
        '    node [shape=box, fontname="Helvetica"];',
    ]
    for node in nodes:
        label = node.label + (f"\n× {node.fan_out}" if node.fan_out else "")
        attrs = [f'label="{_escape(label)}"']
        if node.fan_out:
            attrs.append("shape=box3d")
        if node.service:
            attrs.append('style="rounded,filled", fillcolor="#e8f1ff"')
        lines.append(f'    "{node.name}" [{", ".join(attrs)}];')
    for edge in edges:
        attrs = []
        if edge.collect:
            attrs.append("penwidth=2.5")
        if edge.label:
            attrs.append(f'label="{_escape(edge.label)}"')
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f'    "{edge.source}" -> "{edge.target}"{suffix};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def png(workflow: Workflow, path: str) -> bool:
    """Render with Graphviz's ``dot`` when it is installed; False when it is not."""
    binary = shutil.which("dot")
    if binary is None:
        return False
    subprocess.run([binary, "-Tpng", "-o", path], input=dot(workflow).encode(), check=True)
    return True


def _id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
