"""The run's report: what the served ensemble finds on the held-out clips, measured honestly.

Its headline compares the served ensemble with the **deployable baseline**: the selection's
first model alone, its threshold chosen on validation so that it emits as many tags there as
the ensemble does. Both were fixed before the test clips were looked at, so the comparison is
one a user could have deployed either way, at (about) the same number of tags. Every
headline difference comes with a bootstrap 95 % interval over test clips, and the verdict
says "not significantly different" when the interval includes 0.

Below the headline: each member, the union, the mean score and the chosen strategy (all with
thresholds fixed on validation); a secondary, labelled equal-budget analysis whose baseline
threshold is matched on the test clips themselves (not deployable); per-entity recall; a few
example clips with their tags and misses; the leaderboard; the model cards.

``ensemble_report`` writes ``report.md``, ``report.html`` (self-contained), ``report.png``
and ``report.json`` (every figure, including the series the chart draws).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from fanflow.ml.ensemble import count_threshold, emit, fit_strategy
from fanflow.ml.errors import DataError
from fanflow.ml.leaderboard import (
    STYLE,
    as_json,
    bar_sentence,
    caveat,
    clip_counts,
    html_table,
    markdown_table,
)
from fanflow.ml.stats import compare

FORMAT = "fanflow.report/1"
STRATEGY_ROWS = ("union", "mean", "majority")


def _stats(y: np.ndarray, pred: np.ndarray, tags: list[str]) -> dict:
    tp, present, emitted = (y & pred).sum(0), y.sum(0), pred.sum(0)
    n = max(len(y), 1)
    inter, union = (y & pred).sum(1), (y | pred).sum(1)
    return {
        "recall": float(tp.sum() / present.sum()) if present.sum() else 0.0,
        "precision": float(tp.sum() / emitted.sum()) if emitted.sum() else 0.0,
        "jaccard": float(np.where(union == 0, 1.0, inter / np.maximum(union, 1)).mean()),
        "missed_per_clip": float((y & ~pred).sum() / n),
        "false_per_clip": float((~y & pred).sum() / n),
        "tags_per_clip": float(emitted.sum() / n),
        "per_entity": {
            tag: {"recall": float(tp[k] / present[k]) if present[k] else None,
                  "precision": float(tp[k] / emitted[k]) if emitted[k] else None,
                  "support": int(present[k])}
            for k, tag in enumerate(tags)
        },
    }


def evaluate_ensemble(selection: dict, y_val, y_test, test_scores: dict, tags: list[str],
                      served: np.ndarray | None = None) -> dict:
    """Every figure of the report, from the members' test scores (and the tags the gateway
    served, when there is one); thresholds come from the selection, fixed on validation."""
    y_val = np.asarray(y_val).astype(bool)
    y = np.asarray(y_test).astype(bool)
    members = [c["name"] for c in selection["models"]]
    if not members:
        raise DataError("report: the selection kept no model")
    val_scores = {c["name"]: np.asarray(c["scores"]["val"]) for c in selection["models"]}
    for name in members:
        if np.asarray(test_scores[name]).shape != y.shape:
            raise DataError(f"report: test scores of {name!r} have shape {np.shape(test_scores[name])}, "
                            f"the true tags {y.shape}")
    test = [np.asarray(test_scores[n], dtype=np.float32) for n in members]
    aggregation = selection["aggregation"]
    chosen = emit(test, aggregation["strategy"], aggregation["threshold"])
    mismatched = None
    if served is not None:
        mismatched = int((np.asarray(served).astype(bool) != chosen).any(axis=1).sum())
        chosen = np.asarray(served).astype(bool)

    rows: dict[str, dict] = {}
    for name, s in zip(members, test, strict=True):
        rows[name] = {"kind": "member", "threshold": 0.5, **_stats(y, s >= 0.5, tags)}
    for strategy in STRATEGY_ROWS:
        fitted = fit_strategy(y_val, [val_scores[n] for n in members], strategy)
        rows[strategy] = {"kind": "combination", "threshold": fitted["threshold"],
                          **_stats(y, emit(test, strategy, fitted["threshold"]), tags)}
    label = f"served: {aggregation['strategy']}"
    rows[label] = {"kind": "served", "threshold": aggregation["threshold"], **_stats(y, chosen, tags)}
    base = selection["baseline"]
    base_pred = np.asarray(test_scores[base["member"]], dtype=np.float32) >= np.float32(base["threshold"])
    base_label = f"baseline: {base['member']} @ {base['threshold']:.3f}"
    rows[base_label] = {"kind": "baseline", "threshold": base["threshold"], **_stats(y, base_pred, tags)}

    headline = compare(y, chosen, base_pred)
    best_member = members[0]
    versus_member = compare(y, chosen, test[0] >= 0.5)
    # Secondary: the equal-budget analysis on test (each member's threshold matched to the
    # served ensemble's tag count on the test clips themselves; the best of them).
    count = int(chosen.sum())
    test_tuned = []
    for name, s in zip(members, test, strict=True):
        t = count_threshold(s, count)
        test_tuned.append((_stats(y, s >= t, tags)["recall"], -members.index(name), name, t, s >= t))
    _, _, tt_name, tt_threshold, tt_pred = max(test_tuned, key=lambda r: r[:2])
    secondary = {"member": tt_name, "threshold": tt_threshold, "recall_gain": compare(y, chosen, tt_pred)["recall"],
                 **{k: v for k, v in _stats(y, tt_pred, tags).items() if k != "per_entity"}}
    return {
        "clips": len(y),
        "tags": tags,
        "members": members,
        "strategy": aggregation["strategy"],
        "threshold": aggregation["threshold"],
        "served_label": label,
        "baseline_label": base_label,
        "baseline": base,
        "rows": rows,
        "headline": headline,
        "versus_best_member": {"member": best_member, **versus_member},
        "test_tuned_baseline": secondary,
        "served_mismatched_clips": mismatched,
        "chosen": chosen,
        "baseline_pred": base_pred,
    }


# --------------------------------------------------------------------------- text


def _pts(d: dict) -> str:
    return f"{100 * d['difference']:+.2f} points (95 % interval {100 * d['low']:+.2f} to {100 * d['high']:+.2f})"


def _per_clip(d: dict) -> str:
    return f"{d['difference']:+.3f} per clip (95 % interval {d['low']:+.3f} to {d['high']:+.3f})"


def verdict(ev: dict) -> str:
    """The headline sentence: the served ensemble against the deployable baseline."""
    h = ev["headline"]
    served, base = ev["rows"][ev["served_label"]], ev["rows"][ev["baseline_label"]]
    names = " + ".join(ev["members"])
    lead = (f"The served ensemble ({names}, {ev['strategy']}) against the deployable baseline "
            f"({ev['baseline']['member']} alone, threshold {ev['baseline']['threshold']:.3f} chosen on validation "
            f"to emit as many tags as the ensemble: {served['tags_per_clip']:.3f} vs {base['tags_per_clip']:.3f} "
            f"tags per clip on test): ")
    if h["recall"]["significant"]:
        side = "finds more" if h["recall"]["difference"] > 0 else "finds fewer"
        result = f"it {side} of the entities present, recall {_pts(h['recall'])}"
    else:
        result = f"recall is not significantly different, {_pts(h['recall'])}"
    return (lead + result + f"; missed tags {_per_clip(h['missed_per_clip'])}, false tags "
            f"{_per_clip(h['false_per_clip'])}, Jaccard {_pts(h['jaccard'])}.")


def _table_rows(ev: dict) -> list[tuple[str, dict]]:
    return list(ev["rows"].items())


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _main_table_md(ev: dict) -> list[str]:
    lines = ["| | threshold | recall | precision | Jaccard | missed / clip | false / clip | tags / clip |",
             "|---|---|---|---|---|---|---|---|"]
    for name, st in _table_rows(ev):
        lines.append(f"| {name} | {_f(st['threshold'])} | {_f(st['recall'])} | {_f(st['precision'])} | "
                     f"{_f(st['jaccard'])} | {_f(st['missed_per_clip'])} | {_f(st['false_per_clip'])} | "
                     f"{_f(st['tags_per_clip'])} |")
    return lines


def _secondary(ev: dict) -> str:
    s = ev["test_tuned_baseline"]
    return (f"Secondary, not deployable (threshold matched on the test clips themselves): against "
            f"{s['member']} at {s['threshold']:.3f} ({s['tags_per_clip']:.3f} tags per clip), the served "
            f"ensemble's recall differs by {_pts(s['recall_gain'])}.")


def _versus_member(ev: dict) -> str:
    v = ev["versus_best_member"]
    return (f"Against {v['member']} at its own thresholds: missed tags {_per_clip(v['missed_per_clip'])}, "
            f"false tags {_per_clip(v['false_per_clip'])}, Jaccard {_pts(v['jaccard'])}.")


def _run_lines(selection: dict) -> list[str]:
    run = selection["run"]
    data = run.get("data", {})
    params = ", ".join(f"{k}={v}" for k, v in sorted(run.get("params", {}).items()))
    return [f"- run: {run.get('id') or '(outside a run)'}, {run['date']}",
            f"- data: {data.get('source', '?')}" + (f" ({data['folder']})" if data.get("folder") else "")
            + f"; clips: {clip_counts(data.get('clips'))}; {data.get('frames')} frames of "
            f"{' × '.join(map(str, data.get('size') or []))} pixels; {data.get('tags')} entities"
            + (f"; {data['skipped']} bad file(s) skipped" if data.get("skipped") else ""),
            f"- parameters: {params or '(defaults)'}"]


# --------------------------------------------------------------------------- examples


def pick_examples(ev: dict, y: np.ndarray, count: int = 4) -> list[int]:
    """Test clips worth looking at: found by the ensemble and missed by the baseline, the
    reverse, a miss of the ensemble, a false tag of it (the first of each)."""
    chosen, base = ev["chosen"], ev["baseline_pred"]
    y = np.asarray(y).astype(bool)
    kinds = [((chosen & y & ~base).any(1)), ((base & y & ~chosen).any(1)), ((y & ~chosen).any(1)),
             ((chosen & ~y).any(1))]
    picked: list[int] = []
    for mask in kinds:
        for i in np.flatnonzero(mask):
            if int(i) not in picked:
                picked.append(int(i))
                break
    return picked[:count]


def _example_record(i: int, ev: dict, y: np.ndarray, tags: list[str]) -> dict:
    def names(mask):
        return [t for t, on in zip(tags, mask, strict=True) if on]

    y = np.asarray(y).astype(bool)
    chosen, base = ev["chosen"][i], ev["baseline_pred"][i]
    return {"clip": i, "true": names(y[i]), "ensemble": names(chosen), "missed": names(y[i] & ~chosen),
            "false": names(chosen & ~y[i]), "baseline": names(base)}


# --------------------------------------------------------------------------- chart


def chart_series(ev: dict) -> dict:
    """What the chart draws, as data (stored in report.json beside the PNG)."""
    keep = [*ev["members"], ev["served_label"], ev["baseline_label"]]
    return {
        "recall_per_entity": {name: [ev["rows"][name]["per_entity"][t]["recall"] for t in ev["tags"]]
                              for name in keep},
        "entities": ev["tags"],
        "errors_per_clip": {name: {"missed": st["missed_per_clip"], "false": st["false_per_clip"]}
                            for name, st in ev["rows"].items()},
    }


def _chart(series: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = series["entities"]
    recall = series["recall_per_entity"]
    palette = ["#8fb3d9", "#4a78a8", "#b7a3cf", "#7d62a6", "#2e9b47", "#e08a1e"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2.3, 1]})
    width = 0.8 / len(recall)
    x = np.arange(len(tags))
    for i, (name, values) in enumerate(recall.items()):
        colour = palette[-2] if name.startswith("served") else palette[-1] if name.startswith("baseline") \
            else palette[i % 4]
        left.bar(x + (i - (len(recall) - 1) / 2) * width, [v or 0.0 for v in values], width, label=name,
                 color=colour)
    low = min([v or 0.0 for values in recall.values() for v in values] + [0.8])
    left.set_ylim(max(0.0, low - 0.05), 1.0)
    left.set_xticks(x, tags, rotation=0 if len(tags) <= 12 else 60)
    left.set_ylabel("recall (share of clips showing it that are tagged)")
    left.set_title("Recall per entity on test (higher is better)")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=min(len(recall), 4),
                frameon=False)
    left.grid(axis="y", alpha=0.3)
    errors = series["errors_per_clip"]
    labels = [name if len(name) <= 36 else name[:35] + "…" for name in errors]
    y = np.arange(len(errors))
    right.barh(y - 0.2, [e["missed"] for e in errors.values()], 0.4, label="missed / clip", color="#c0392b")
    right.barh(y + 0.2, [e["false"] for e in errors.values()], 0.4, label="false / clip", color="#95a5a6")
    right.set_yticks(y, labels, fontsize=8)
    right.invert_yaxis()
    right.set_title("Errors per clip (lower is better)")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2, frameon=False)
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- writing


def _cards(selection: dict) -> list[tuple[str, str]]:
    """(model name, card Markdown) for every model of the leaderboard that has a card."""
    out = []
    for row in selection["board"]:
        card = row.get("card") or {}
        path = card.get("markdown")
        if path is not None and Path(path).is_file():
            out.append((row["name"], Path(path).read_text(encoding="utf-8")))
    return out


def _anchor(name: str) -> str:
    return "card-" + "".join(c if c.isalnum() else "-" for c in name)


def ensemble_report(selection: dict, data: dict, test_scores: dict, out_dir, served=None,
                    split: str = "test") -> dict:
    """Write the report (Markdown, HTML, PNG, JSON and example GIFs) into ``out_dir`` and
    return its files and summary."""
    from fanflow.ml.video import write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tags = [str(t) for t in data["tags"]]
    y = np.asarray(data[split]["y"]).astype(bool)
    ev = evaluate_ensemble(selection, data["val"]["y"], y, test_scores, tags, served)
    board = as_json(selection)
    series = chart_series(ev)
    chart = _chart(series, out / "report.png")
    examples = []
    for i in pick_examples(ev, y):
        record = _example_record(i, ev, y, tags)
        record["video"] = write_video(np.asarray(data[split]["x"][i]), out / f"example-{i:04d}.gif", scale=4)
        examples.append(record)
    cards = _cards(selection)
    text = verdict(ev)
    doc = {
        "format": FORMAT,
        "run": selection["run"],
        "split": split,
        "clips": ev["clips"],
        "members": ev["members"],
        "strategy": ev["strategy"],
        "threshold": ev["threshold"],
        "baseline": ev["baseline"],
        "verdict": text,
        "headline": ev["headline"],
        "versus_best_member": ev["versus_best_member"],
        "test_tuned_baseline": ev["test_tuned_baseline"],
        "rows": ev["rows"],
        "served_mismatched_clips": ev["served_mismatched_clips"],
        "examples": [{k: v for k, v in e.items() if k != "video"} | {"video": e["video"].name} for e in examples],
        "figures": series,
        "leaderboard": board,
    }
    paths = {"markdown": out / "report.md", "html": out / "report.html", "chart": chart, "json": out / "report.json"}
    paths["json"].write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    paths["markdown"].write_text(_markdown(ev, doc, board, examples, cards, chart.name), encoding="utf-8")
    paths["html"].write_text(_html(ev, doc, board, examples, cards, chart.read_bytes()), encoding="utf-8")
    summary = {
        "clips": ev["clips"], "members": ev["members"], "strategy": ev["strategy"], "threshold": ev["threshold"],
        "baseline_member": ev["baseline"]["member"], "baseline_threshold": ev["baseline"]["threshold"],
        "recall_gain": ev["headline"]["recall"], "missed_per_clip_change": ev["headline"]["missed_per_clip"],
        "false_per_clip_change": ev["headline"]["false_per_clip"], "jaccard_change": ev["headline"]["jaccard"],
        "served": {k: v for k, v in ev["rows"][ev["served_label"]].items() if k != "per_entity"},
        "baseline": {k: v for k, v in ev["rows"][ev["baseline_label"]].items() if k != "per_entity"},
        "served_mismatched_clips": ev["served_mismatched_clips"], "verdict": text,
    }
    return {**paths, "examples": [e["video"] for e in examples], "summary": summary}


def _markdown(ev, doc, board, examples, cards, chart_name) -> str:
    lines = ["# Report", "", *(f"{text}\n" for text in caveat(doc)), *_run_lines(doc), "", "## Headline", "", doc["verdict"], "",
             _versus_member(ev), "", _secondary(ev), "",
             f"![recall per entity and errors per clip]({chart_name})", "",
             f"## On the {doc['clips']} test clips", "", *_main_table_md(ev), "",
             "Thresholds of the combinations and the baseline were chosen on validation; each member emits a "
             "tag where its score reaches 0.5 (its own thresholds, tuned on validation, are folded into its "
             "scores; its card lists them).", ""]
    if ev["served_mismatched_clips"] is not None:
        lines += [f"The gateway's tags differ from the offline combination on {ev['served_mismatched_clips']} "
                  "clip(s).", ""]
    lines += ["## Example clips", "", "| clip | true | ensemble | missed | false | baseline |",
              "|---|---|---|---|---|---|"]
    for e in examples:
        lines.append(f"| {e['clip']} ({e['video'].name}) | {' '.join(e['true']) or '–'} | "
                     f"{' '.join(e['ensemble']) or '–'} | {' '.join(e['missed']) or '–'} | "
                     f"{' '.join(e['false']) or '–'} | {' '.join(e['baseline']) or '–'} |")
    lines += ["", "## Leaderboard", "", bar_sentence(board), "", markdown_table(board), "", "## Model cards", ""]
    for row in board["models"]:
        card = (row.get("card") or {}).get("markdown")
        if card:
            lines.append(f"- {row['name']}: {card['file']}" + (f" (`{card['sha256']}`)" if card.get("sha256") else ""))
    return "\n".join([*lines, ""])


def _html(ev, doc, board, examples, cards, png: bytes) -> str:
    esc = html.escape
    head = "".join(f"<th>{h}</th>" for h in
                   ["", "threshold", "recall", "precision", "Jaccard", "missed / clip", "false / clip", "tags / clip"])
    body = "".join(
        f"<tr><th>{esc(name)}</th><td>{_f(st['threshold'])}</td><td>{_f(st['recall'])}</td>"
        f"<td>{_f(st['precision'])}</td><td>{_f(st['jaccard'])}</td><td>{_f(st['missed_per_clip'])}</td>"
        f"<td>{_f(st['false_per_clip'])}</td><td>{_f(st['tags_per_clip'])}</td></tr>"
        for name, st in _table_rows(ev))
    run = "".join(f"<li>{esc(line[2:])}</li>" for line in _run_lines(doc))
    shots = "".join(
        f"<figure style=\"display:inline-block;margin:0 1em 1em 0\"><img alt=\"clip {e['clip']}\" "
        f"src=\"data:image/gif;base64,{base64.b64encode(e['video'].read_bytes()).decode()}\">"
        f"<figcaption>clip {e['clip']}: true {esc(' '.join(e['true']) or '–')}<br>ensemble "
        f"{esc(' '.join(e['ensemble']) or '–')}<br><span class=\"miss\">missed {esc(' '.join(e['missed']) or '–')}"
        f"</span><br><span class=\"false\">false {esc(' '.join(e['false']) or '–')}</span></figcaption></figure>"
        for e in examples)
    card_html = "".join(f"<details id=\"{_anchor(name)}\"><summary>{esc(name)}</summary><pre>{esc(text)}</pre>"
                        f"</details>" for name, text in cards)
    note = f"<p class=\"verdict missed\">{esc(doc['run']['caveat'])}</p>" if doc["run"].get("caveat") else ""
    mismatch = ("" if ev["served_mismatched_clips"] is None else
                f"<p>The gateway's tags differ from the offline combination on {ev['served_mismatched_clips']} "
                "clip(s).</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Report</title><style>{STYLE}</style></head><body>
<h1>Report</h1>{note}<ul>{run}</ul>
<p class="verdict">{esc(doc['verdict'])}</p>
<p>{esc(_versus_member(ev))}</p><p>{esc(_secondary(ev))}</p>
<img alt="recall per entity and errors per clip" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>On the {doc['clips']} test clips</h2><table><tr>{head}</tr>{body}</table>{mismatch}
<h2>Example clips</h2>{shots}
<h2>Leaderboard</h2><p>{esc(bar_sentence(board))}</p>{html_table(board, _anchor)}
<h2>Model cards</h2>{card_html}
</body></html>
"""


def offline_report(data: dict, selection: dict, split: str = "test") -> dict:
    """The report from the scores the training step stored (no servers): what the engine-less
    reference run and a run whose models are not served write."""
    from fanflow.runtime import scratch_dir

    scores = {c["name"]: np.asarray(c["scores"][split]) for c in selection["models"]}
    return ensemble_report(selection, data, scores, Path(scratch_dir()) / "report", split=split)
