"""Documents the UI shows as more than JSON: the leaderboard the selection step writes
(``fanflow.leaderboard/1``) and the report of the reference workflow (``fanflow.report/1``),
both described in docs/ml.md; Markdown rendered safely; and the small bar charts they draw,
laid out here as plain numbers for an SVG template."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

LEADERBOARD = "fanflow.leaderboard/1"
REPORT = "fanflow.report/1"
PALETTE = ["#8fb3d9", "#4a78a8", "#b7a3cf", "#7d62a6", "#6aa88f", "#c9a15a"]
SERVED, BASELINE = "#2e9b47", "#e08a1e"


def recognise(document: Any) -> tuple[str, Any] | None:
    """("leaderboard", view) or ("report", view) for a document of a known format."""
    if not isinstance(document, dict):
        return None
    try:
        if document.get("format") == LEADERBOARD:
            return "leaderboard", leaderboard(document)
        if document.get("format") == REPORT:
            return "report", report(document)
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # an older or newer shape: shown as JSON
    return None


# -- charts ---------------------------------------------------------------------------------
@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str  # the tooltip


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    lines: list[tuple[float, float, float, float, str]] = field(default_factory=list)  # x1 y1 x2 y2 label
    labels: list[tuple[float, float, str, str]] = field(default_factory=list)  # x y text anchor
    legend: list[tuple[str, str]] = field(default_factory=list)  # colour, name


def _scale(low: float, high: float, start: float, length: float):
    span = (high - low) or 1.0
    return lambda v: start + (min(max(v, low), high) - low) / span * length


def grouped_bars(categories: list[str], series: dict[str, list[float | None]], colours: list[str],
                 low: float = 0.0, high: float = 1.0, width: int = 640, height: int = 220) -> Chart:
    """Vertical bars, one group per category, one bar per series."""
    chart = Chart(width, height + 40)
    left, plot_w, plot_h = 36, width - 44, height - 20
    y = _scale(low, high, plot_h, -plot_h + 8)
    group = plot_w / max(len(categories), 1)
    bar_w = group * 0.8 / max(len(series), 1)
    for tick in _ticks(low, high):
        chart.lines.append((left, y(tick), left + plot_w, y(tick), ""))
        chart.labels.append((left - 4, y(tick) + 4, f"{tick:g}", "end"))
    for c, category in enumerate(categories):
        chart.labels.append((left + group * (c + 0.5), plot_h + 14, category, "middle"))
        for s, (name, values) in enumerate(series.items()):
            value = values[c] if c < len(values) and values[c] is not None else low
            top = y(value)
            chart.bars.append(Bar(left + group * c + group * 0.1 + s * bar_w, top, max(bar_w - 1, 1),
                                  y(low) - top, colours[s], f"{name}, {category}: {value:.3f}"))
    chart.legend = list(zip(colours, series, strict=False))
    return chart


def paired_hbars(rows: dict[str, tuple[float, float]], names: tuple[str, str], colours: tuple[str, str],
                 width: int = 520) -> Chart:
    """Two horizontal bars per row (missed and false tags per clip, say)."""
    height = 26 * len(rows) + 30
    chart = Chart(width, height)
    left = 210
    high = max([max(a, b) for a, b in rows.values()] + [1e-9])
    x = _scale(0.0, high, left, width - left - 50)
    for i, (label, (a, b)) in enumerate(rows.items()):
        top = 6 + 26 * i
        chart.labels.append((left - 6, top + 14, label if len(label) <= 32 else label[:31] + "…", "end"))
        for j, value in enumerate((a, b)):
            chart.bars.append(Bar(left, top + 11 * j, x(value) - left, 10, colours[j],
                                  f"{label}: {names[j]} {value:.3f}"))
            chart.labels.append((x(value) + 4, top + 11 * j + 9, f"{value:.3f}", "start"))
    chart.legend = list(zip(colours, names, strict=True))
    return chart


def _ticks(low: float, high: float) -> list[float]:
    step = 0.1 if high - low <= 0.5 else 0.25 if high - low <= 1.0 else round((high - low) / 4, 2)
    first = round(low / step) * step
    return [round(first + i * step, 3) for i in range(int((high - first) / step + 1e-9) + 1)]


# -- the leaderboard ------------------------------------------------------------------------
@dataclass
class Leaderboard:
    document: dict
    metric: str
    bar: dict
    rows: list[dict]
    chart: Chart

    @property
    def ensemble(self) -> dict | None:
        return self.document.get("ensemble")


def leaderboard(doc: dict) -> Leaderboard:
    bar = doc["bar"]
    metric = bar["metric"]
    rows = list(doc["models"])
    values = [r["val"][metric] for r in rows] + [r["test"][metric] for r in rows] + [bar["effective"]]
    low = max(0.0, min(v for v in values if v is not None) - 0.05)
    low = int(low * 10) / 10
    width, left, row_h, head = 640, 170, 24, 18  # the bar's label goes in the head
    chart = Chart(width, head + row_h * len(rows) + 24)
    x = _scale(low, 1.0, left, width - left - 20)
    for i, row in enumerate(rows):
        top = head + row_h * i
        colour = SERVED if row["selected"] else ("#4a78a8" if row["passes_bar"] else "#b0b7bf")
        val, test = row["val"][metric], row["test"][metric]
        chart.labels.append((left - 6, top + 13, f"{row['position']}. {row['name']}", "end"))
        chart.bars.append(Bar(left, top, x(val or low) - left, 11, colour,
                              f"{row['name']}: validation {metric} {val:.3f}"))
        if test is not None:
            chart.bars.append(Bar(left, top + 12, x(test) - left, 5, "#7f8c8d",
                                  f"{row['name']}: test {metric} {test:.3f}"))
    bottom = head + row_h * len(rows)
    chart.lines.append((x(bar["effective"]), 2, x(bar["effective"]), bottom, f"bar {bar['effective']:.3f}"))
    for tick in _ticks(low, 1.0):
        chart.labels.append((x(tick), bottom + 14, f"{tick:g}", "middle"))
    chart.legend = [(SERVED, "selected"), ("#4a78a8", "passes the bar"), ("#b0b7bf", "below the bar"),
                    ("#7f8c8d", f"test {metric}")]
    return Leaderboard(doc, metric, bar, rows, chart)


# -- the report -----------------------------------------------------------------------------
@dataclass
class Report:
    document: dict
    recall: Chart
    errors: Chart
    columns: list[str]


def report(doc: dict) -> Report:
    figures = doc["figures"]
    series = figures["recall_per_entity"]
    colours = []
    for i, name in enumerate(series):
        colours.append(SERVED if name.startswith("served") else BASELINE if name.startswith("baseline")
                       else PALETTE[i % 4])
    values = [v for vs in series.values() for v in vs if v is not None]
    low = int(max(0.0, min([*values, 0.8]) - 0.05) * 10) / 10
    recall = grouped_bars(list(figures["entities"]), series, colours, low=low)
    errors = paired_hbars({name: (e["missed"], e["false"]) for name, e in figures["errors_per_clip"].items()},
                          ("missed / clip", "false / clip"), ("#c0392b", "#95a5a6"))
    columns = ["recall", "precision", "jaccard", "missed_per_clip", "false_per_clip", "tags_per_clip"]
    return Report(doc, recall, errors, columns)


# -- Markdown -------------------------------------------------------------------------------
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown(text: str, images: dict[str, str] | None = None) -> Markup:
    """Markdown as HTML, raw HTML left as text. An image that names a file beside it (in the
    same task's output) is shown from ``images`` (name -> URL); other relative images, which
    cannot be found, are dropped."""
    tokens = _markdown.parse(text)
    for token in tokens:
        for child in token.children or ():
            if child.type == "image":
                source = str(child.attrGet("src") or "")
                found = (images or {}).get(source.removeprefix("./"))
                if found is not None:
                    child.attrSet("src", found)
                elif "://" not in source:
                    child.attrSet("src", "")
    return Markup(_markdown.renderer.render(tokens, _markdown.options, {}))
