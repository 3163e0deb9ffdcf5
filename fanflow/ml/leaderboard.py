"""The leaderboard: every trained model with its validation and test figures, the bar,
whether it was selected and, if not, why. Written by the selection step as JSON (for the
command line and the web UI, which show it without recomputing anything), Markdown and a
self-contained HTML page; the final report embeds the same table.

The JSON's field names are stable (format ``fanflow.leaderboard/1``; docs/ml.md lists them).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

FORMAT = "fanflow.leaderboard/1"
COLUMNS = (("val", "jaccard", "val Jaccard"), ("test", "jaccard", "test Jaccard"),
           ("test", "micro_f1", "test micro-F1"), ("test", "missed_per_clip", "test missed / clip"),
           ("test", "false_per_clip", "test false / clip"))


def file_ref(path) -> dict | None:
    """How a stored file is named in JSON: its name and, once stored, its digest."""
    if path is None:
        return None
    digest = getattr(path, "digest", None)
    return {"file": getattr(path, "original_name", None) or Path(path).name,
            **({"sha256": digest} if digest else {})}


def as_json(selection: dict) -> dict:
    """The leaderboard document (plain JSON) of a selection."""
    rows = []
    for row in selection["board"]:
        card = row.get("card") or {}
        rows.append({**{k: v for k, v in row.items() if k != "card"},
                     "card": {kind: file_ref(p) for kind, p in card.items()} if card else None})
    aggregation = selection.get("aggregation")
    return {
        "format": FORMAT,
        "run": selection["run"],
        "bar": selection["bar"],
        "policy": selection["policy"],
        "k": selection["k"],
        "passed": selection["passed"],
        "message": selection["message"],
        "failed_branches": selection["failed_branches"],
        "models": rows,
        "ensemble": None if aggregation is None else {
            "members": aggregation["members"], "strategy": aggregation["strategy"],
            "threshold": aggregation["threshold"], "val_jaccard": aggregation["jaccard"],
            "val": {k: aggregation["val"].get(k) for k in ("jaccard", "micro_recall", "micro_precision",
                                                           "missed_per_clip", "false_per_clip", "tags_per_clip")},
            "tried": selection.get("tried", []),
        },
        "baseline": selection.get("baseline"),
    }


def clip_counts(clips) -> str:
    """``train 6000, val 1000, test 1000``."""
    if not isinstance(clips, dict):
        return "?"
    return ", ".join(f"{split} {count}" for split, count in clips.items())


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _status(row: dict) -> str:
    if row["selected"]:
        return f"selected (member {row['member_rank']})"
    return row["why_not"] or ""


def caveat(doc: dict) -> list[str]:
    """The run's caveat as a Markdown paragraph (none when it has none)."""
    text = doc["run"].get("caveat")
    return [f"**{text}**"] if text else []


def chosen_sentence(doc: dict) -> str:
    ensemble = doc["ensemble"]
    if ensemble is None:
        return ""
    return (f"Chosen on validation: {' + '.join(ensemble['members'])} combined by {ensemble['strategy']}"
            + (f" at {ensemble['threshold']:.3f}" if ensemble["strategy"] == "mean" else "")
            + f" (validation Jaccard {ensemble['val_jaccard']:.3f}).")


def summary_markdown(doc: dict) -> str:
    """The leaderboard as a run's summary shows it: the bar, every model and what was chosen
    (the one-line verdict is the run's own: its success, or the bar step's error)."""
    return "\n\n".join(["## Leaderboard", *caveat(doc), bar_sentence(doc), markdown_table(doc),
                         chosen_sentence(doc)]).rstrip() + "\n"


def markdown_table(doc: dict) -> str:
    head = "| # | model | " + " | ".join(label for _, _, label in COLUMNS) + " | train s | status |"
    lines = [head, "|---" * (len(COLUMNS) + 4) + "|"]
    for row in doc["models"]:
        cells = [_f(row[split][metric]) for split, metric, _ in COLUMNS]
        lines.append(f"| {row['position']} | {row['name']} | " + " | ".join(cells)
                     + f" | {_f(row['train_seconds'], 0)} | {_status(row)} |")
    return "\n".join(lines)


def bar_sentence(doc: dict) -> str:
    bar = doc["bar"]
    trivial = bar["trivial"]
    text = (f"Bar: {bar['metric']} ≥ {bar['effective']:.3f} on validation (asked {bar['at_least']:.3f}; "
            f"the predictor that emits nothing scores {trivial['empty']:.3f}, the one that emits every tag "
            f"{trivial['all_tags']:.3f}; a model must beat both by {bar['margin']:.3f})")
    return text + (", raised above the trivial predictors." if bar["raised"] else ".")


def html_table(doc: dict, card_anchor=None) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in
                   ["#", "model", *[label for _, _, label in COLUMNS], "train s", "status"])
    body = []
    for row in doc["models"]:
        name = esc(row["name"])
        if card_anchor and row.get("card"):
            name = f'<a href="#{card_anchor(row["name"])}">{name}</a>'
        cls = ' class="selected"' if row["selected"] else ""
        cells = "".join(f"<td>{_f(row[split][metric])}</td>" for split, metric, _ in COLUMNS)
        body.append(f"<tr{cls}><td>{row['position']}</td><th>{name}</th>{cells}"
                    f"<td>{_f(row['train_seconds'], 0)}</td><td class=\"why\">{esc(_status(row))}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td.why { text-align: left; }
tr.selected { background: #eef7ee; }
.verdict { font-size: 1.05em; background: #f4f7f4; padding: 0.8em 1em; border-left: 4px solid #2e9b47; }
.verdict.missed { background: #fbf1f0; border-left-color: #c0392b; }
.miss { color: #b03a2e; } .false { color: #7f8c8d; }
img { max-width: 100%; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
"""


def write_leaderboard(selection: dict, out_dir: Path) -> dict[str, Path]:
    """``leaderboard.json``, ``leaderboard.md`` and ``leaderboard.html`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = as_json(selection)
    run = doc["run"]
    data = run.get("data", {})
    heading = (f"Run {run.get('id') or '(outside a run)'}, {run['date']}; data: {data.get('source', '?')}, "
               f"clips: {clip_counts(data.get('clips'))}")
    chosen = chosen_sentence(doc)
    md = "\n\n".join(["# Leaderboard", heading, *caveat(doc), bar_sentence(doc), markdown_table(doc), chosen,
                      doc["message"], ""])
    paths = {"json": out / "leaderboard.json", "markdown": out / "leaderboard.md", "html": out / "leaderboard.html"}
    paths["json"].write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    paths["markdown"].write_text(md, encoding="utf-8")
    esc = html.escape
    note = f"<p class=\"verdict missed\">{esc(run['caveat'])}</p>" if run.get("caveat") else ""
    paths["html"].write_text(
        f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Leaderboard</title>"
        f"<style>{STYLE}</style></head><body><h1>Leaderboard</h1><p>{esc(heading)}</p>{note}"
        f"<p>{esc(bar_sentence(doc))}</p>{html_table(doc)}<p>{esc(chosen)}</p>"
        f"<p class=\"verdict{'' if doc['passed'] else ' missed'}\">{esc(doc['message'])}</p></body></html>\n",
        encoding="utf-8")
    return paths
