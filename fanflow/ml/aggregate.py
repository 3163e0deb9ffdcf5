"""The aggregation step of the reference workflow: send the held-out clips through the
ensemble gateway over HTTP, as a user would, ask each served member too (for the per-model
rows and the baseline), and write the report (``report.ensemble_report``): the served
ensemble against the deployable baseline, with the thresholds and strategy that selection
fixed on validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fanflow.ml.errors import DataError
from fanflow.ml.report import ensemble_report
from fanflow.ml.video import to_unit


def _ask(url: str, clips: np.ndarray, batch: int, timeout: float):
    """Every clip's answer from one V2 server, in batches: (tags, scores, vocabulary, degraded)."""
    from fanflow.serving import wire
    from fanflow.serving.client import V2Client

    tags, scores, vocabulary, degraded = [], [], None, []
    with V2Client(url, timeout=timeout) as client:
        for start in range(0, len(clips), batch):
            response = client.infer(to_unit(np.asarray(clips[start:start + batch])), request_id=f"clips-{start}")
            answer = wire.decode(response)
            tags += answer.tags
            scores.append(answer.scores)
            vocabulary = answer.vocabulary
            if response.get("parameters", {}).get("degraded"):
                degraded.append(start)
    return tags, np.concatenate(scores), vocabulary, degraded


def tag_clips(gateway: dict, members: list[dict], selection: dict, data: dict, split: str = "test",
              batch: int = 64, timeout: float = 120.0) -> dict:
    """Tag ``data[split]`` through the gateway (the user-facing answer) and through each
    member (their scores, for the per-model rows and the baseline); write the report and
    return its files and summary.

    ``gateway`` and ``members`` are the service steps' announced endpoints
    (``{"url", "model"}``); ``selection`` is the selection step's result."""
    if split not in data:
        raise DataError(f"data: no {split!r} split (it has: {', '.join(k for k in data if isinstance(data[k], dict))})")
    x = data[split]["x"]
    names = [str(t) for t in data["tags"]]
    served_tags, _, _, degraded = _ask(gateway["url"], x, batch, timeout)
    if degraded:
        raise DataError(f"the gateway answered degraded for the batches starting at clips {degraded}: "
                        "a member was down, so the report would not describe the ensemble")
    scores = {}
    for member in members:
        _, member_scores, vocabulary, _ = _ask(member["url"], x, batch, timeout)
        scores[member["model"]] = member_scores[:, [vocabulary.index(name) for name in names]]
    served = np.zeros((len(served_tags), len(names)), dtype=bool)
    for i, clip_tags in enumerate(served_tags):
        served[i, [names.index(tag) for tag in clip_tags]] = True
    from fanflow.runtime import scratch_dir

    report = ensemble_report(selection, data, scores, Path(scratch_dir()) / "report", served=served, split=split)
    _print(report["summary"])
    return report


def _print(summary: dict) -> None:
    rows = [("served " + summary["strategy"], summary["served"]),
            (f"baseline ({summary['baseline_member']} at {summary['baseline_threshold']:.3f})", summary["baseline"])]
    print(f"{'':<44} {'recall':>7} {'precision':>9} {'missed/clip':>12} {'false/clip':>11} {'tags/clip':>10}")
    for name, st in rows:
        print(f"{name:<44} {st['recall']:>7.3f} {st['precision']:>9.3f} {st['missed_per_clip']:>12.3f} "
              f"{st['false_per_clip']:>11.3f} {st['tags_per_clip']:>10.3f}")
    print(summary["verdict"])
