"""Ingestion steps: each returns one data set that every training branch reads.

The result of every source has the same shape::

    {"train": {"x": uint8 (N, T, H, W), "y": uint8 (N, K), ...},
     "val": {...}, "test": {...},
     "tags": [K entity names],
     "previews": [paths of GIF / MP4 files a person can watch],
     "report": {counts and settings}}

Clips are stored as uint8 grey levels (a quarter of float32's size); models divide by 255.
The engine writes each array once and hands every branch the same memory-mapped file.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from fanflow.ml.errors import DataError, ParameterError
from fanflow.ml.video import VIDEO_SUFFIXES, probe, read_clip, to_uint8, write_video

SPLITS = ("train", "val", "test")
DIGIT = 8  # side of a load_digits image


# --------------------------------------------------------------------------- moving digits


def moving_digits(
    seed: int = 0,
    train: int = 6000,
    val: int = 1000,
    test: int = 1000,
    frames: int = 8,
    size: int = 32,
    min_digits: int = 1,
    max_digits: int = 3,
    speed: int = 2,
    vanish: float = 0.15,
    occlusion: float = 0.3,
    noise: float = 0.10,
    pools: tuple[float, float, float] | list[float] = (0.6, 0.15, 0.25),
    previews: int = 4,
) -> dict:
    """Clips of handwritten digits moving over a small canvas, made from scikit-learn's
    ``load_digits`` (1,797 real 8×8 digits), deterministically from ``seed``.

    Each clip shows ``min_digits``..``max_digits`` distinct digits; each digit is one entity
    and the clip's label is the set of digits in it. A digit moves up to ``speed`` pixels a
    frame per axis and bounces off the walls, vanishes from a frame with probability
    ``vanish`` (it stays visible in at least two), and in a fraction ``occlusion`` of the
    clips a static grey block hides what passes behind it, never for more than all but two
    frames of a digit. Gaussian noise of deviation ``noise`` is added last.

    The source images are split per class into train / val / test pools (fractions
    ``pools``), so validation and test clips show handwriting that training never saw.
    """
    _check_int("train", train, 1)
    _check_int("val", val, 1)
    _check_int("test", test, 1)
    _check_int("frames", frames, 2)
    _check_int("size", size, DIGIT)
    _check_int("min_digits", min_digits, 1)
    _check_int("max_digits", max_digits, min_digits)
    if max_digits > 10:
        raise ParameterError(f"max_digits: at most 10 distinct digits fit in a clip, got {max_digits}")
    _check_int("speed", speed, 0)
    for name, value in (("vanish", vanish), ("occlusion", occlusion)):
        if not 0.0 <= value < 1.0:
            raise ParameterError(f"{name}: expected a probability in [0, 1), got {value!r}")
    if noise < 0:
        raise ParameterError(f"noise: expected a deviation >= 0, got {noise!r}")
    if len(pools) != 3 or min(pools) <= 0:
        raise ParameterError(f"pools: expected three positive fractions (train, val, test), got {pools!r}")

    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target
    seeds = np.random.SeedSequence(seed).spawn(4)
    pool_ids = _split_pools(labels, pools, np.random.default_rng(seeds[0]))

    counts = {"train": train, "val": val, "test": test}
    data: dict = {}
    for s, split in enumerate(SPLITS):
        rng = np.random.default_rng(seeds[s + 1])
        x, y, src = _make_clips(
            rng,
            images,
            labels,
            pool_ids[split],
            counts[split],
            frames,
            size,
            min_digits,
            max_digits,
            speed,
            vanish,
            occlusion,
            noise,
        )
        data[split] = {"x": x, "y": y, "src": src}

    tags = [str(d) for d in range(10)]
    data["tags"] = tags
    data["previews"] = _write_previews(data["test"], tags, previews)
    data["report"] = {
        "source": "moving_digits (scikit-learn load_digits)",
        "seed": seed,
        "clips": counts,
        "source_images": {split: len(pool_ids[split]) for split in SPLITS},
        "frames": frames,
        "size": [size, size],
        "tags": len(tags),
        "entities_per_clip": {split: round(float(data[split]["y"].sum(1).mean()), 3) for split in SPLITS},
        "settings": {
            "min_digits": min_digits,
            "max_digits": max_digits,
            "speed": speed,
            "vanish": vanish,
            "occlusion": occlusion,
            "noise": noise,
            "pools": list(pools),
        },
    }
    return data


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ParameterError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def _split_pools(labels: np.ndarray, fractions, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint source-image indices per split, split class by class."""
    total = float(sum(fractions))
    out: dict[str, list] = {split: [] for split in SPLITS}
    for c in range(10):
        ids = rng.permutation(np.flatnonzero(labels == c))
        n_train = round(len(ids) * fractions[0] / total)
        n_val = round(len(ids) * fractions[1] / total)
        out["train"].append(ids[:n_train])
        out["val"].append(ids[n_train : n_train + n_val])
        out["test"].append(ids[n_train + n_val :])
    return {split: np.sort(np.concatenate(parts)) for split, parts in out.items()}


def _make_clips(
    rng, images, labels, pool, n, frames, size, min_digits, max_digits, speed, vanish, occlusion, noise
):
    by_class = [pool[labels[pool] == c] for c in range(10)]
    x = np.empty((n, frames, size, size), dtype=np.uint8)
    y = np.zeros((n, 10), dtype=np.uint8)
    src = np.full((n, max_digits), -1, dtype=np.int16)
    for i in range(n):
        k = int(rng.integers(min_digits, max_digits + 1))
        classes = rng.choice(10, size=k, replace=False)
        sprites = []
        for j, c in enumerate(classes):
            image_id = int(rng.choice(by_class[c]))
            src[i, j] = image_id
            y[i, c] = 1
            sprite = images[image_id] * rng.uniform(0.7, 1.0)
            path = _trajectory(rng, frames, size, speed)
            shown = rng.random(frames) >= vanish
            if shown.sum() < 2:
                shown[rng.choice(frames, size=2, replace=False)] = True
            sprites.append((sprite, path, shown))
        block = _occluder(rng, sprites, size, frames) if rng.random() < occlusion else None
        canvas = np.zeros((frames, size, size), dtype=np.float32)
        for sprite, path, shown in sprites:
            for t in np.flatnonzero(shown):
                r, c = path[t]
                window = canvas[t, r : r + DIGIT, c : c + DIGIT]
                np.maximum(window, sprite, out=window)
        if block is not None:
            r, c, side, grey = block
            canvas[:, r : r + side, c : c + side] = grey
        canvas += rng.normal(0.0, noise, canvas.shape).astype(np.float32)
        x[i] = to_uint8(canvas)
    return x, y, src


def _trajectory(rng, frames, size, speed) -> np.ndarray:
    """Top-left corners (frames, 2) of a sprite moving in a straight line, bouncing off walls."""
    top = size - DIGIT
    pos = rng.integers(0, top + 1, size=2)
    vel = rng.integers(-speed, speed + 1, size=2)
    path = np.empty((frames, 2), dtype=int)
    for t in range(frames):
        path[t] = pos
        for a in range(2):
            nxt = pos[a] + vel[a]
            if nxt < 0 or nxt > top:
                vel[a] = -vel[a]
                nxt = pos[a] + vel[a]
            pos[a] = nxt
    return path


def _occluder(rng, sprites, size, frames, tries: int = 10):
    """A static grey block (row, col, side, grey) placed so that every digit keeps at least
    two frames in which more than half of its ink shows; None if no such place was drawn."""
    side = int(rng.integers(6, 11))
    grey = float(rng.uniform(0.35, 0.65))
    for _ in range(tries):
        r, c = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(_frames_seen(s, r, c, side) >= 2 for s in sprites):
            return r, c, side, grey
    return None


def _frames_seen(sprite_info, r, c, side) -> int:
    sprite, path, shown = sprite_info
    ink = sprite > 0.2
    total = ink.sum()
    seen = 0
    for t in np.flatnonzero(shown):
        pr, pc = path[t]
        rows = slice(max(r - pr, 0), max(min(r + side - pr, DIGIT), 0))
        cols = slice(max(c - pc, 0), max(min(c + side - pc, DIGIT), 0))
        if ink[rows, cols].sum() * 2 < total:
            seen += 1
    return seen


def _write_previews(split: dict, tags: list[str], count: int) -> list[Path]:
    """The first clips of a split as GIFs (and the first one as an MP4 too)."""
    from fanflow.runtime import scratch_dir

    if count <= 0:
        return []
    out = Path(scratch_dir())
    paths = []
    for i in range(min(count, len(split["x"]))):
        names = "-".join(t for t, on in zip(tags, split["y"][i], strict=True) if on) or "none"
        paths.append(write_video(split["x"][i], out / f"clip-{i:03d}-tags-{names}.gif"))
        if i == 0:
            paths.append(write_video(split["x"][i], out / f"clip-{i:03d}-tags-{names}.mp4"))
    return paths


# --------------------------------------------------------------------------- a user's videos


# Chosen from the videos when not given: the median frame count and size, within these.
AUTO_FRAMES = (4, 16)
AUTO_MAX_SIDE = 64


def video_folder(
    path: str | Path,
    labels: str | Path = "labels.csv",
    frames: int = 0,
    size: int | tuple[int, int] | list[int] = 0,
    on_bad: str = "error",
    split: tuple[float, float, float] | list[float] | None = None,
    seed: int = 0,
    tags: list[str] | str | Path | None = None,
    previews: int = 2,
) -> dict:
    """A folder of video files (MP4, AVI, GIF, ...) and a labels CSV with columns ``file``
    and ``tags`` (tags separated by spaces, ``;`` or ``|``; an optional ``split`` column
    with train / val / test fixes each clip's split).

    The entity vocabulary is ``tags`` (a list, or a text file with one tag per line), else
    a ``tags.txt`` beside the labels file, else every tag the CSV uses. A missing file, an
    unreadable video, a tag outside the vocabulary or a video without frames raises
    :class:`DataError` naming the file, unless ``on_bad="skip"``: then the clip is left out
    and counted in the report. Without a ``split`` column the clips are split at random
    (``seed``) by the fractions ``split`` (default 0.7 / 0.15 / 0.15).

    ``frames`` 0 takes the videos' median frame count (4 to 16); ``size`` 0 takes their
    median height and width, shrunk so that the longer side is at most 64 pixels (and
    rounded to a multiple of 4).
    """
    if on_bad not in ("error", "skip"):
        raise ParameterError(f"on_bad: expected 'error' or 'skip', got {on_bad!r}")
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    labels_path = folder / labels if not Path(labels).is_absolute() else Path(labels)
    rows = _read_labels(labels_path)
    vocabulary = _vocabulary(tags, labels_path, rows)
    index = {t: k for k, t in enumerate(vocabulary)}

    skipped: list[dict] = []
    shapes = {}
    for row in rows:
        try:
            unknown = [t for t in row["tags"] if t not in index]
            if unknown:
                raise DataError(
                    f"{labels_path}: line {row['line']}: unknown tag {unknown[0]!r} for {row['file']!r} "
                    f"(known tags: {', '.join(vocabulary)})"
                )
            shapes[row["file"]] = probe(folder / row["file"]) if not (frames and size) else None
        except DataError as e:
            if on_bad == "error":
                raise
            skipped.append({"file": row["file"], "reason": str(e)})
    frames, size, chosen_from = _clip_format(frames, size, [s for s in shapes.values() if s])

    clips, targets, names, chosen = [], [], [], []
    for row in rows:
        if row["file"] not in shapes:
            continue
        try:
            clip = read_clip(folder / row["file"], frames, size)
        except DataError as e:
            if on_bad == "error":
                raise
            skipped.append({"file": row["file"], "reason": str(e)})
            continue
        y = np.zeros(len(vocabulary), dtype=np.uint8)
        y[[index[t] for t in row["tags"]]] = 1
        clips.append(to_uint8(clip))
        targets.append(y)
        names.append(row["file"])
        chosen.append(row["split"])
    if not clips:
        raise DataError(f"{labels_path}: no usable clips ({len(skipped)} skipped)")
    if skipped:
        print(f"video_folder: skipped {len(skipped)} bad file(s) of {len(rows)} (on_bad=skip); first: "
              f"{skipped[0]['reason']}", flush=True)

    assignment = _assign_splits(labels_path, chosen, split, seed)
    x, y = np.stack(clips), np.stack(targets)
    data: dict = {}
    for s in SPLITS:
        ids = np.flatnonzero(assignment == s)
        data[s] = {"x": x[ids], "y": y[ids], "files": [names[i] for i in ids]}

    listed = {row["file"] for row in rows}
    unlabelled = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES and p.relative_to(folder).as_posix() not in listed
    )
    data["tags"] = vocabulary
    data["previews"] = _write_previews(data["test"], vocabulary, previews)
    data["report"] = {
        "source": "video_folder",
        "folder": str(folder),
        "labels": str(labels_path),
        "clips": {s: len(data[s]["x"]) for s in SPLITS},
        "frames": frames,
        "size": list(x.shape[2:]),
        "format_from": chosen_from,
        "tags": len(vocabulary),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "unlabelled_files": len(unlabelled),
    }
    return data


def _clip_format(frames: int, size, shapes: list[tuple[int, int, int]]):
    """(frames, (height, width), how they were chosen): as given, or from the videos' medians."""
    chosen = []
    if not frames:
        median = int(np.median([s[0] for s in shapes])) if shapes else 8
        frames = int(np.clip(median, *AUTO_FRAMES))
        chosen.append(f"frames: median {median} of the videos")
    if not size:
        h = float(np.median([s[1] for s in shapes])) if shapes else 32.0
        w = float(np.median([s[2] for s in shapes])) if shapes else 32.0
        scale = min(1.0, AUTO_MAX_SIDE / max(h, w))
        size = (max(8, 4 * round(h * scale / 4)), max(8, 4 * round(w * scale / 4)))
        chosen.append(f"size: median {h:g}×{w:g} of the videos")
    return frames, size, "; ".join(chosen) or "given"


def _read_labels(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: no such labels file (expected a CSV with columns file, tags)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [name.strip().lower() for name in reader.fieldnames or []]
        if "file" not in fields or "tags" not in fields:
            raise DataError(f"{path}: expected a header with columns 'file' and 'tags', got {fields}")
        rows, seen = [], {}
        for line, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not row["file"]:
                raise DataError(f"{path}: line {line}: empty 'file' field")
            if row["file"] in seen:
                raise DataError(
                    f"{path}: line {line}: {row['file']!r} is listed twice (first on line "
                    f"{seen[row['file']]})"
                )
            seen[row["file"]] = line
            split = row.get("split", "") or None
            if split is not None and split not in SPLITS:
                raise DataError(f"{path}: line {line}: split must be train, val or test, got {split!r}")
            tags = [t for t in re.split(r"[\s;|,]+", row["tags"]) if t]
            rows.append({"line": line, "file": row["file"], "tags": tags, "split": split})
    if not rows:
        raise DataError(f"{path}: the labels file lists no clips")
    return rows


def _vocabulary(tags, labels_path: Path, rows: list[dict]) -> list[str]:
    if tags is None and (labels_path.parent / "tags.txt").is_file():
        tags = "tags.txt"
    if isinstance(tags, str | Path):
        # a relative tags file lies beside the labels file
        tags_path = labels_path.parent / tags
        if not tags_path.is_file():
            raise DataError(f"{tags_path}: no such tags file (expected one tag per line)")
        tags = [line.strip() for line in tags_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if tags is None:
        tags = sorted({t for row in rows for t in row["tags"]})
    tags = [str(t) for t in tags]
    if not tags:
        raise DataError(f"{labels_path}: no tags: the vocabulary of entities is empty")
    if len(set(tags)) != len(tags):
        raise DataError(f"tags: the vocabulary lists a tag twice: {tags}")
    return tags


def _assign_splits(labels_path: Path, chosen: list, fractions, seed: int) -> np.ndarray:
    n = len(chosen)
    given = [c is not None for c in chosen]
    if all(given):
        assignment = np.array(chosen)
    else:
        if any(given):
            raise DataError(
                f"{labels_path}: the 'split' column is filled for some clips and empty for others"
            )
        fractions = list(fractions or (0.7, 0.15, 0.15))
        if len(fractions) != 3 or min(fractions) <= 0:
            raise ParameterError(
                f"split: expected three positive fractions (train, val, test), got {fractions}"
            )
        if n < 3:
            raise DataError(
                f"{labels_path}: {n} usable clip(s); at least 3 are needed for train, val and test"
            )
        total = sum(fractions)
        n_val = max(1, round(n * fractions[1] / total))
        n_test = max(1, round(n * fractions[2] / total))
        n_train = n - n_val - n_test
        if n_train < 1:
            raise DataError(f"{labels_path}: {n} usable clips are too few for the split {fractions}")
        order = np.random.default_rng(seed).permutation(n)
        assignment = np.empty(n, dtype=object)
        assignment[order[:n_train]] = "train"
        assignment[order[n_train : n_train + n_val]] = "val"
        assignment[order[n_train + n_val :]] = "test"
    for s in SPLITS:
        if not (assignment == s).any():
            raise DataError(f"{labels_path}: no usable clip in the {s} split")
    return assignment


# --------------------------------------------------------------------------- arrays in .npz


def npz_arrays(
    path: str | Path,
    tags: list[str] | None = None,
    split: tuple[float, float, float] | list[float] | None = None,
    seed: int = 0,
    previews: int = 2,
) -> dict:
    """Clips already decoded into a NumPy ``.npz`` file.

    Either pre-split arrays ``x_train, y_train, x_val, y_val, x_test, y_test`` or ``x`` and
    ``y`` with an optional ``split`` array (strings train / val / test); ``x`` is (N, T, H, W)
    uint8, or floats in [0, 1]; ``y`` is (N, K) of 0 / 1; the entity names come from a
    ``tags`` array in the file or the ``tags`` argument (default "0".."K-1").
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None

    if all(f"x_{s}" in arrays and f"y_{s}" in arrays for s in SPLITS):
        parts = {s: (arrays[f"x_{s}"], arrays[f"y_{s}"], f"x_{s}", f"y_{s}") for s in SPLITS}
    elif "x" in arrays and "y" in arrays:
        x, y = arrays["x"], arrays["y"]
        _check_xy(path, x, y, "x", "y")
        if "split" in arrays:
            chosen = [str(s) for s in arrays["split"]]
            if len(chosen) != len(x):
                raise DataError(f"{path}: 'split' has {len(chosen)} entries for {len(x)} clips")
            bad = sorted(set(chosen) - set(SPLITS))
            if bad:
                raise DataError(f"{path}: 'split' must hold train, val or test, got {bad[:3]}")
        else:
            chosen = [None] * len(x)
        assignment = _assign_splits(path, chosen, split, seed)
        parts = {s: (x[assignment == s], y[assignment == s], "x", "y") for s in SPLITS}
    else:
        raise DataError(
            f"{path}: expected arrays x and y, or x_train, y_train, x_val, y_val, x_test, y_test; "
            f"found {sorted(arrays)}"
        )

    data: dict = {}
    for s, (x, y, xname, yname) in parts.items():
        _check_xy(path, x, y, xname, yname)
        data[s] = {"x": to_uint8(x), "y": y.astype(np.uint8)}
    shapes = {data[s]["x"].shape[1:] for s in SPLITS}
    widths = {data[s]["y"].shape[1] for s in SPLITS}
    if len(shapes) != 1 or len(widths) != 1:
        raise DataError(f"{path}: the splits disagree on clip shape {shapes} or tag count {widths}")
    k = widths.pop()
    if tags is None and "tags" in arrays:
        tags = [str(t) for t in arrays["tags"]]
    tags = [str(t) for t in tags] if tags is not None else [str(i) for i in range(k)]
    if len(tags) != k or len(set(tags)) != k:
        raise DataError(f"{path}: 'tags' must name {k} distinct entities (y has {k} columns), got {tags}")
    data["tags"] = tags
    data["previews"] = _write_previews(data["test"], tags, previews)
    data["report"] = {
        "source": "npz_arrays",
        "file": str(path),
        "clips": {s: len(data[s]["x"]) for s in SPLITS},
        "frames": int(data["train"]["x"].shape[1]),
        "size": list(data["train"]["x"].shape[2:]),
        "tags": k,
    }
    return data


def _check_xy(path: Path, x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> None:
    if x.ndim != 4 or x.dtype.kind not in "uif":
        raise DataError(f"{path}: '{xname}' must be a numeric array (N, T, H, W), got {x.dtype} {x.shape}")
    if 0 in x.shape:
        raise DataError(f"{path}: '{xname}' holds an empty clip (shape {x.shape})")
    if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"{path}: '{xname}' must be uint8 or floats in [0, 1], got values in "
            f"[{x.min():.3g}, {x.max():.3g}]"
        )
    if y.ndim != 2 or len(y) != len(x):
        raise DataError(f"{path}: '{yname}' must be (N, K) with N = {len(x)} clips, got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{path}: '{yname}' must hold only 0 and 1 (multi-hot tags)")


def clips(videos: str | Path | None = None, labels: str = "labels.csv", on_bad: str = "error", seed: int = 0,
          train: int = 0, val: int = 0, test: int = 0, frames: int = 0, size: int = 0) -> dict:
    """The reference workflow's data: the built-in moving digits, or, when ``videos`` names a
    folder, the user's own video files and their labels CSV (see ``video_folder``).

    ``train``, ``val`` and ``test`` are clip counts for the built-in digits (0: 6,000 / 1,000 /
    1,000); a folder's clips are all used, split by its labels file, so setting them with
    ``videos`` is an error. ``frames`` and ``size`` 0 take the source's own (the digits: 8 of
    32×32; a folder: chosen from its videos)."""
    if videos:
        given = [name for name, value in (("train_clips", train), ("val_clips", val), ("test_clips", test)) if value]
        if given:
            raise ParameterError(
                f"{', '.join(given)}: apply to the built-in moving digits only; the clips of a videos folder are "
                "all used and split by the labels file's 'split' column (or 70/15/15 at random)")
        return video_folder(videos, labels=labels, frames=frames, size=size, on_bad=on_bad, seed=seed)
    return moving_digits(seed=seed, train=train or 6000, val=val or 1000, test=test or 1000, frames=frames or 8,
                         size=size or 32)
