"""The coverage report: what the kept models find together that each misses alone.

For the selected models' scores on the same clips it compares each member with three ways
of combining them (the union of their tags, the intersection, the mean score) and with the
honest baseline for the union: a single member with its threshold lowered until it emits as
many tags as the union. The union emits more tags than any member, so it finds more
entities almost for free; only if it also beats the lowered-threshold baseline at the same
tag count does combining models find entities that a single model could not be made to.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from fanflow.ml.errors import DataError


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
        "tags_emitted": int(emitted.sum()),
        "per_entity": {
            tag: {
                "recall": float(tp[k] / present[k]) if present[k] else None,
                "precision": float(tp[k] / emitted[k]) if emitted[k] else None,
                "support": int(present[k]),
            }
            for k, tag in enumerate(tags)
        },
    }


def lowered_threshold(scores: np.ndarray, count: int) -> float:
    """The threshold at which ``scores`` emit (at least, and with ties exactly) ``count`` tags."""
    flat = np.sort(scores.ravel())[::-1]
    if count <= 0:
        return float(np.nextafter(flat[0], np.inf)) if len(flat) else 1.0
    return float(flat[min(count, len(flat)) - 1])


def coverage(y_true, member_scores: dict, thresholds: dict, tags: list[str]) -> dict:
    """Per-entity recall and precision of each member, of their union, intersection and mean
    score, and of the fair baseline; missed and false tags per clip for each.

    ``member_scores`` maps a model name to its (n, K) scores on the clips whose true tags are
    ``y_true`` (n, K); ``thresholds`` maps the name to its decision threshold.
    """
    y = np.asarray(y_true).astype(bool)
    tags = [str(t) for t in tags]
    if not member_scores:
        raise DataError("coverage: no member scores given")
    names = list(member_scores)
    scores = {}
    for name in names:
        s = np.asarray(member_scores[name], dtype=np.float64)
        if s.shape != y.shape:
            raise DataError(f"coverage: scores of {name!r} have shape {s.shape}, the true tags {y.shape}")
        if name not in thresholds:
            raise DataError(f"coverage: no threshold given for {name!r}")
        scores[name] = s
    if len(tags) != y.shape[1]:
        raise DataError(f"coverage: {len(tags)} tag names for {y.shape[1]} columns")

    preds = {name: scores[name] >= float(thresholds[name]) for name in names}
    union = np.logical_or.reduce([preds[n] for n in names])
    inter = np.logical_and.reduce([preds[n] for n in names])
    mean_threshold = float(np.mean([float(thresholds[n]) for n in names]))
    mean = np.mean([scores[n] for n in names], axis=0) >= mean_threshold

    count = int(union.sum())
    candidates = []
    for name in names:
        t = lowered_threshold(scores[name], count)
        st = _stats(y, scores[name] >= t, tags)
        candidates.append((st["recall"] or 0.0, -names.index(name), name, t, st))
    _, _, base_name, base_t, base_stats = max(candidates)

    members = {name: {"threshold": float(thresholds[name]), **_stats(y, preds[name], tags)} for name in names}
    combined = {
        "union": _stats(y, union, tags),
        "intersection": _stats(y, inter, tags),
        "mean": {"threshold": mean_threshold, **_stats(y, mean, tags)},
    }
    baseline = {"member": base_name, "threshold": base_t, **base_stats}
    best = min(names, key=lambda n: (members[n]["missed_per_clip"], names.index(n)))
    u, b = combined["union"], baseline
    best_missed = members[best]["missed_per_clip"]
    summary = {
        "clips": len(y),
        "members": names,
        "best_member": best,
        "best_member_missed_per_clip": best_missed,
        "best_member_false_per_clip": members[best]["false_per_clip"],
        "union_missed_per_clip": u["missed_per_clip"],
        "union_false_per_clip": u["false_per_clip"],
        "missed_reduction": (1 - u["missed_per_clip"] / best_missed) if best_missed else 0.0,
        "union_fewer_missed_than_every_member": all(
            u["missed_per_clip"] < members[n]["missed_per_clip"] for n in names),
        "tags_per_clip": u["tags_per_clip"],
        "baseline_member": base_name,
        "baseline_threshold": base_t,
        "baseline_tags_per_clip": b["tags_per_clip"],
        "baseline_missed_per_clip": b["missed_per_clip"],
        "baseline_false_per_clip": b["false_per_clip"],
        "union_recall": u["recall"],
        "baseline_recall": b["recall"],
        "recall_gain_over_baseline": (u["recall"] or 0.0) - (b["recall"] or 0.0),
        "union_beats_baseline": (u["recall"] or 0.0) > (b["recall"] or 0.0),
    }
    return {"tags": tags, "clips": len(y), "members": members, "combined": combined,
            "baseline": baseline, "summary": summary}


# --------------------------------------------------------------------------- writing


def _rows(cov: dict) -> list[tuple[str, dict]]:
    rows = [(name, st) for name, st in cov["members"].items()]
    rows += [("union", cov["combined"]["union"]), ("intersection", cov["combined"]["intersection"]),
             ("mean score", cov["combined"]["mean"]),
             (f"baseline: {cov['baseline']['member']} @ {cov['baseline']['threshold']:.3f}", cov["baseline"])]
    return rows


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _verdict(s: dict) -> str:
    gain = s["recall_gain_over_baseline"] * 100
    lines = [
        f"The union of {', '.join(s['members'])} misses {s['union_missed_per_clip']:.3f} entities per clip, "
        f"against {s['best_member_missed_per_clip']:.3f} for the best member alone ({s['best_member']}): "
        f"{100 * s['missed_reduction']:.0f}% fewer, at {s['union_false_per_clip']:.3f} false tags per clip "
        f"instead of {s['best_member_false_per_clip']:.3f}.",
        f"At the same number of tags ({s['tags_per_clip']:.3f} per clip), the best single model with a lowered "
        f"threshold ({s['baseline_member']} at {s['baseline_threshold']:.3f}) misses "
        f"{s['baseline_missed_per_clip']:.3f} per clip: the union "
        + (f"finds more entities (recall {gain:+.2f} points)." if s["union_beats_baseline"]
           else f"does not beat it (recall {gain:+.2f} points); combining these models buys no more than "
                "lowering one model's threshold would."),
    ]
    return " ".join(lines)


def _chart(cov: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = cov["tags"]
    series = [(name, st) for name, st in cov["members"].items()]
    series += [("union", cov["combined"]["union"]), ("baseline (lowered threshold)", cov["baseline"])]
    member_colours = ["#8fb3d9", "#4a78a8", "#b7a3cf", "#7d62a6"]
    colours = [member_colours[i % len(member_colours)] for i in range(len(cov["members"]))]
    colours += ["#2e9b47", "#e08a1e"]

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2.3, 1]})
    width = 0.8 / len(series)
    x = np.arange(len(tags))
    for i, ((name, st), colour) in enumerate(zip(series, colours, strict=True)):
        recall = [st["per_entity"][t]["recall"] or 0.0 for t in tags]
        left.bar(x + (i - (len(series) - 1) / 2) * width, recall, width, label=name, color=colour)
    low = min([st["per_entity"][t]["recall"] or 0.0 for _, st in series for t in tags] + [0.8])
    left.set_ylim(max(0.0, low - 0.05), 1.0)
    left.set_xticks(x, tags)
    left.set_ylabel("recall (share of clips showing it that are tagged)")
    left.set_title("Recall per entity (higher is better)")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=len(series), frameon=False)
    left.grid(axis="y", alpha=0.3)

    rows = _rows(cov)
    labels = [name if len(name) <= 36 else name[:35] + "…" for name, _ in rows]
    y = np.arange(len(rows))
    right.barh(y - 0.2, [st["missed_per_clip"] for _, st in rows], 0.4, label="missed / clip", color="#c0392b")
    right.barh(y + 0.2, [st["false_per_clip"] for _, st in rows], 0.4, label="false / clip", color="#95a5a6")
    right.set_yticks(y, labels, fontsize=8)
    right.invert_yaxis()
    right.set_title("Errors per clip (lower is better)")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2, frameon=False)
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown(cov: dict, chart_name: str) -> str:
    s = cov["summary"]
    lines = [
        "# Coverage report",
        "",
        f"{cov['clips']} clips, {len(cov['tags'])} entities, members: {', '.join(s['members'])}.",
        "",
        _verdict(s),
        "",
        f"![recall per entity and errors per clip]({chart_name})",
        "",
        "| | recall | precision | Jaccard | missed / clip | false / clip | tags / clip |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, st in _rows(cov):
        lines.append(f"| {name} | {_f(st['recall'])} | {_f(st['precision'])} | {_f(st['jaccard'])} | "
                     f"{_f(st['missed_per_clip'])} | {_f(st['false_per_clip'])} | {_f(st['tags_per_clip'])} |")
    lines += ["", "Recall / precision per entity:", ""]
    rows = _rows(cov)
    lines.append("| entity | clips | " + " | ".join(name for name, _ in rows) + " |")
    lines.append("|---" * (len(rows) + 2) + "|")
    for tag in cov["tags"]:
        cells = [f"{_f(st['per_entity'][tag]['recall'], 2)} / {_f(st['per_entity'][tag]['precision'], 2)}"
                 for _, st in rows]
        support = cov["members"][s["members"][0]]["per_entity"][tag]["support"]
        lines.append(f"| {tag} | {support} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The union tags an entity when any member does, the intersection when all do, the mean score when "
        "the members' mean probability reaches their mean threshold. The baseline is the member that does "
        "best when its threshold is lowered until it emits as many tags as the union.",
        "",
    ]
    return "\n".join(lines)


def _html(cov: dict, png: bytes) -> str:
    s = cov["summary"]
    esc = html.escape
    head = "".join(f"<th>{h}</th>" for h in
                   ["", "recall", "precision", "Jaccard", "missed / clip", "false / clip", "tags / clip"])
    body = "".join(
        f"<tr><th>{esc(name)}</th><td>{_f(st['recall'])}</td><td>{_f(st['precision'])}</td>"
        f"<td>{_f(st['jaccard'])}</td><td>{_f(st['missed_per_clip'])}</td><td>{_f(st['false_per_clip'])}</td>"
        f"<td>{_f(st['tags_per_clip'])}</td></tr>"
        for name, st in _rows(cov)
    )
    rows = _rows(cov)
    ent_head = "<th>entity</th>" + "".join(f"<th>{esc(name)}</th>" for name, _ in rows)
    ent_body = "".join(
        f"<tr><th>{esc(tag)}</th>" + "".join(
            f"<td>{_f(st['per_entity'][tag]['recall'], 2)} / {_f(st['per_entity'][tag]['precision'], 2)}</td>"
            for _, st in rows) + "</tr>"
        for tag in cov["tags"]
    )
    image = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Coverage report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child {{ text-align: left; }}
.verdict {{ font-size: 1.05em; background: #f4f7f4; padding: 0.8em 1em; border-left: 4px solid #2e9b47; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Coverage report</h1>
<p>{cov['clips']} clips, {len(cov['tags'])} entities, members: {esc(', '.join(s['members']))}.</p>
<p class="verdict">{esc(_verdict(s))}</p>
<img alt="recall per entity and errors per clip" src="data:image/png;base64,{image}">
<table><tr>{head}</tr>{body}</table>
<h2>Recall / precision per entity</h2>
<table><tr>{ent_head}</tr>{ent_body}</table>
<p>The union tags an entity when any member does, the intersection when all do, the mean score when the
members' mean probability reaches their mean threshold. The baseline is the member that does best when its
threshold is lowered until it emits as many tags as the union.</p>
</body></html>
"""


def write_report(coverage_dict: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``coverage.md``, ``coverage.html`` (the chart embedded), ``coverage.png`` and
    ``coverage.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chart = _chart(coverage_dict, out / "coverage.png")
    markdown = out / "coverage.md"
    markdown.write_text(_markdown(coverage_dict, chart.name), encoding="utf-8")
    page = out / "coverage.html"
    page.write_text(_html(coverage_dict, chart.read_bytes()), encoding="utf-8")
    data = out / "coverage.json"
    data.write_text(json.dumps(coverage_dict, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return {"markdown": markdown, "html": page, "chart": chart, "json": data}


def offline_coverage(data: dict, selected: list, split: str = "test") -> dict:
    """Load the selected models (the output of ``top_k``), score ``data[split]`` with each,
    and write the coverage report. Returns the report's files and its summary."""
    from fanflow.ml.models import load_model
    from fanflow.runtime import scratch_dir

    if not selected:
        raise DataError("selected: no models to report on")
    x, y = data[split]["x"], np.asarray(data[split]["y"])
    scores, thresholds = {}, {}
    for candidate in selected:
        model = load_model(candidate["model"])
        name = candidate.get("name") or Path(candidate["model"]).stem
        scores[name] = model.predict_proba(x)
        thresholds[name] = model.threshold_
    cov = coverage(y, scores, thresholds, list(data["tags"]))
    files = write_report(cov, Path(scratch_dir()))
    return {**files, "summary": cov["summary"]}
