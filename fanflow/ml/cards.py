"""Model cards: what a trained model is, what it saw, how well it did, and which file it is."""

from __future__ import annotations

import json
from pathlib import Path

from fanflow.ml.metrics import BAR_METRIC, METRICS

_HEADLINE = [BAR_METRIC, "micro_f1", "macro_f1", "subset_accuracy", "missed_per_clip", "false_per_clip"]


def write_card(card: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``card`` as ``<stem>.card.json`` and ``<stem>.card.md`` in ``out_dir``."""
    out_dir = Path(out_dir)
    json_path = out_dir / f"{stem}.card.json"
    md_path = out_dir / f"{stem}.card.md"
    json_path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    md_path.write_text(card_markdown(card), encoding="utf-8")
    return {"json": json_path, "markdown": md_path}


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def card_markdown(card: dict) -> str:
    metrics, data, artifact = card["metrics"], card["data"], card["artifact"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"{card['summary']}",
        "",
        f"- family: `{card['family']}` (recipe `{card['recipe']}`, class `{card['class']}`)",
        f"- entities: {', '.join(card['tags'])}",
        f"- input: clips of {' × '.join(map(str, card['input_shape']))} (frames × height × width)",
        "- decision thresholds (tuned on validation, per entity): "
        + ", ".join(f"{tag} {t:.2f}" for tag, t in card["thresholds"].items()),
        f"- training: {card['training']['seconds']:.1f} s on {card['training']['threads']} thread(s), "
        f"device {card['training']['device']}, {card['training']['rounds']} round(s), "
        f"best round {card['training']['best_round']} (early stopping on the validation loss)"
        + (f"; budget {card['training']['budget']['steps']} optimiser steps "
           f"({card['training']['budget']['epochs']} epochs)" if card["training"].get("budget") else ""),
        f"- file: `{artifact['file']}`, {artifact['bytes']:,} bytes, `{artifact['sha256']}`",
        "",
        "## Data",
        "",
        f"- source: {data.get('source', '?')}",
        "- clips: " + ", ".join(f"{k} {v}" for k, v in data.get("clips", {}).items()),
        "",
        "## Metrics",
        "",
        f"The bar metric is `{BAR_METRIC}`: {METRICS[BAR_METRIC]}.",
        "",
        "| metric | validation | test |",
        "|---|---|---|",
    ]
    for name in _HEADLINE:
        lines.append(f"| {name} | {_fmt(metrics['val'].get(name))} | {_fmt(metrics['test'].get(name))} |")
    lines += [
        "",
        "Per entity on the test split:",
        "",
        "| entity | precision | recall | F1 | clips |",
        "|---|---|---|---|---|",
    ]
    for tag, e in metrics["test"]["per_entity"].items():
        lines.append(f"| {tag} | {_fmt(e['precision'])} | {_fmt(e['recall'])} | {_fmt(e['f1'])} | {e['support']} |")
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(card["params"], indent=1, sort_keys=True),
              "```", ""]
    return "\n".join(lines)
