"""The aggregation step of the reference workflow: send the held-out clips through the
ensemble gateway over HTTP, as a user would, and report how many entities the union finds
compared with each served model alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fanflow.ml.errors import DataError
from fanflow.ml.report import coverage, write_report


def _as_unit_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def _ask(url: str, clips: np.ndarray, batch: int, timeout: float):
    """Every clip's answer from one V2 server, in batches; returns the decoded batches joined."""
    from fanflow.serving import wire
    from fanflow.serving.client import V2Client

    tags, scores, provenance, vocabulary, threshold = [], [], [], None, None
    degraded = []
    with V2Client(url, timeout=timeout) as client:
        for start in range(0, len(clips), batch):
            response = client.infer(_as_unit_float(clips[start:start + batch]), request_id=f"clips-{start}")
            answer = wire.decode(response)
            tags += answer.tags
            scores.append(answer.scores)
            provenance += answer.provenance or [[] for _ in answer.tags]
            vocabulary, threshold = answer.vocabulary, answer.threshold
            if response.get("parameters", {}).get("degraded"):
                degraded.append(start)
    return tags, np.concatenate(scores), provenance, vocabulary, threshold, degraded


def tag_union(gateway: dict, members: list[dict], data: dict, split: str = "test", batch: int = 64,
              timeout: float = 120.0) -> dict:
    """Tag ``data[split]`` through the gateway (the user-facing answer) and through each
    member (their full scores, for the per-model columns and the fair baseline); write the
    coverage report (Markdown, HTML, PNG, JSON) and return its files and summary.

    ``gateway`` and ``members`` are the service steps' announced endpoints
    (``{"url", "model"}``)."""
    if split not in data:
        raise DataError(f"data: no {split!r} split (it has: {', '.join(k for k in data if isinstance(data[k], dict))})")
    x, y = data[split]["x"], np.asarray(data[split]["y"]).astype(bool)
    names = [str(t) for t in data["tags"]]
    union_tags, _, provenance, _, _, degraded = _ask(gateway["url"], x, batch, timeout)
    if degraded:
        raise DataError(f"the gateway answered degraded for the batches starting at clips {degraded}: "
                        "a member was down, so the report would not describe the ensemble")
    scores, thresholds = {}, {}
    for member in members:
        _, member_scores, _, member_vocab, member_threshold, _ = _ask(member["url"], x, batch, timeout)
        columns = [member_vocab.index(name) for name in names]
        scores[member["model"]] = member_scores[:, columns]
        thresholds[member["model"]] = 0.5 if member_threshold is None else member_threshold
    cov = coverage(y, scores, thresholds, names)
    # The gateway's union must be exactly what the members' own decisions give.
    served_union = np.zeros_like(y)
    for i, clip_tags in enumerate(union_tags):
        for tag in clip_tags:
            served_union[i, names.index(tag)] = True
    computed_union = np.logical_or.reduce([scores[n] >= thresholds[n] for n in scores])
    mismatched = int((served_union != computed_union).any(axis=1).sum())
    from fanflow.runtime import scratch_dir

    files = write_report(cov, Path(scratch_dir()) / "report")
    summary = {**cov["summary"], "served_union_mismatched_clips": mismatched,
               "gateway": gateway["url"], "examples": _examples(provenance, y, names)}
    _print_table(cov)
    return {**files, "summary": summary}


def _examples(provenance: list, y: np.ndarray, names: list[str], count: int = 3) -> list[dict]:
    """A few clips where one member alone found an entity: what the union adds, with provenance."""
    found = []
    for i, tags in enumerate(provenance):
        solo = [p for p in tags if len(p.get("found_by", [])) == 1 and y[i, names.index(p["tag"])]]
        if solo:
            found.append({"clip": i, "true": [n for n, v in zip(names, y[i], strict=True) if v], "tags": tags})
        if len(found) == count:
            break
    return found


def _print_table(cov: dict) -> None:
    rows = [(name, stats) for name, stats in cov["members"].items()]
    rows += [("union", cov["combined"]["union"]),
             (f"baseline ({cov['baseline']['member']} at {cov['baseline']['threshold']:.3f})", cov["baseline"])]
    print(f"{'model':<40} {'recall':>7} {'precision':>9} {'missed/clip':>12} {'false/clip':>11}")
    for name, stats in rows:
        print(f"{name:<40} {stats['recall']:>7.3f} {stats['precision']:>9.3f} "
              f"{stats['missed_per_clip']:>12.3f} {stats['false_per_clip']:>11.3f}")
