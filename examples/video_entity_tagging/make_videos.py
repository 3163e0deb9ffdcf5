"""Make a folder of labelled videos in the format the reference workflow reads: video files
and a ``labels.csv`` (``file,tags``) with a ``tags.txt`` vocabulary beside it.

Two kinds of data, both unlike the built-in moving digits:

- ``shapes``: 8 geometric shapes (circle, square, triangle, star, cross, ring, diamond,
  hexagon) in colour or grey, moving over clutter (lines and blobs that are no entity),
  entering and leaving the frame; 48 or 64 pixels square, 8 to 16 frames, MP4 and GIF;
  0 to 3 shapes per clip (about one clip in seven shows none).
- ``sky``: scenes with weather and things in the sky: rain (fast streaks), snow (slow
  drifting flakes), lightning (one or two bright frames), sun, bird (a small V gliding
  across), balloon (rising); 80×60 or 96×72 pixels, 10 to 24 frames, AVI and GIF. Each tag
  is present with probability 0.3, so some clips show nothing.

    python examples/video_entity_tagging/make_videos.py shapes data/shapes --clips 2400
    fanflow run video-entity-tagging -p videos=data/shapes
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon"]
SKY = ["rain", "snow", "lightning", "sun", "bird", "balloon"]


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n, radius, offset=0.0):
        return [(cx + radius * math.cos(angle + offset + 2 * math.pi * i / n),
                 cy + radius * math.sin(angle + offset + 2 * math.pi * i / n)) for i in range(n)]

    if kind == "square":
        return ring(4, r, math.pi / 4)
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
    if kind == "triangle":
        return ring(3, r, -math.pi / 2)
    if kind == "hexagon":
        return ring(6, r)
    if kind == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, 0.42 * r, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    raise ValueError(kind)


def _draw_shape(draw, kind: str, cx: float, cy: float, r: float, angle: float, colour) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, round(r / 3)))
    elif kind == "cross":
        w = max(2, round(r / 2.5))
        draw.line([cx - r, cy - r, cx + r, cy + r], fill=colour, width=w)
        draw.line([cx - r, cy + r, cx + r, cy - r], fill=colour, width=w)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=colour)


def _colour(rng, grey: bool):
    if grey:
        v = int(rng.integers(150, 256))
        return (v, v, v)
    return tuple(int(c) for c in rng.integers(60, 256, 3))


def shapes_clip(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """One clip (T, H, W, 3) uint8 and its tags."""
    from PIL import Image, ImageDraw

    side = int(rng.choice([48, 64]))
    frames = int(rng.integers(8, 17))
    grey = rng.random() < 0.3
    count = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.3, 0.2]))
    kinds = list(rng.choice(SHAPES, size=count, replace=False))
    background = np.clip(rng.normal(40, 12, (side, side, 3)), 0, 255)
    clutter = []
    for _ in range(int(rng.integers(2, 7))):  # lines and small blobs that are no entity
        x0, y0, x1, y1 = rng.uniform(0, side, 4)
        clutter.append(("line", (x0, y0, x1, y1), _colour(rng, grey), int(rng.integers(1, 3))))
    for _ in range(int(rng.integers(0, 4))):
        x, y, rr = *rng.uniform(0, side, 2), rng.uniform(1.5, 3.5)
        clutter.append(("blob", (x - rr, y - rr, x + rr, y + rr), _colour(rng, grey), 0))
    movers = []
    for kind in kinds:
        r = rng.uniform(0.12, 0.2) * side
        start = rng.uniform(-0.1 * side, 1.1 * side, 2)  # may start partly outside
        velocity = rng.uniform(-0.06, 0.06, 2) * side
        spin = rng.uniform(-0.3, 0.3)
        movers.append((kind, r, start, velocity, rng.uniform(0, 2 * math.pi), spin, _colour(rng, grey)))
    clip = np.empty((frames, side, side, 3), dtype=np.uint8)
    for t in range(frames):
        image = Image.fromarray(background.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for what, box, colour, width in clutter:
            if what == "line":
                draw.line(box, fill=colour, width=width)
            else:
                draw.ellipse(box, fill=colour)
        for kind, r, start, velocity, angle, spin, colour in movers:
            cx, cy = start + t * velocity
            _draw_shape(draw, kind, cx, cy, r, angle + t * spin, colour)
        frame = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (side, side, 3))
        clip[t] = np.clip(frame, 0, 255).astype(np.uint8)
    # a tag is what shows: a shape whose centre never enters the frame is not in the clip
    shown = []
    for kind, _, start, velocity, *_ in movers:
        centres = np.array([start + t * velocity for t in range(frames)])
        inside = ((centres > 0) & (centres < side)).all(axis=1)
        if inside.any():
            shown.append(kind)
    return clip, shown


def sky_clip(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """One clip (T, H, W, 3) uint8 and its tags."""
    from PIL import Image, ImageDraw

    w, h = [(80, 60), (96, 72)][int(rng.integers(2))]
    frames = int(rng.integers(10, 25))
    present = [tag for tag in SKY if rng.random() < 0.3]
    top, bottom = rng.uniform([40, 80, 150], [90, 140, 230]), rng.uniform([120, 160, 200], [190, 210, 250])
    if "rain" in present or "lightning" in present:  # a stormy sky is darker
        top, bottom = top * 0.45, bottom * 0.55
    rows = np.linspace(0, 1, h)[:, None, None]
    sky = top * (1 - rows) + bottom * rows
    ground = int(h * rng.uniform(0.75, 0.9))
    sky = np.broadcast_to(sky, (h, w, 3)).copy()
    sky[ground:] = rng.uniform([30, 60, 20], [80, 120, 60])
    flakes = rng.uniform([0, 0], [w, ground], (int(rng.integers(25, 60)), 2))
    sun = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.35) * h, rng.uniform(4, 8))
    bird_y, bird_dir = rng.uniform(0.15, 0.6) * h, rng.choice([-1, 1])
    bird_x0 = rng.uniform(0, w)
    balloon = (rng.uniform(0.2, 0.8) * w, rng.uniform(0.5, 0.8) * h, tuple(int(c) for c in rng.integers(150, 256, 3)))
    flash = set(rng.choice(frames, size=int(rng.integers(1, 3)), replace=False).tolist())
    clouds = [(rng.uniform(0, w), rng.uniform(0, 0.5 * h), rng.uniform(6, 16), rng.uniform(3, 6),
               int(rng.integers(170, 235)), rng.uniform(-0.5, 0.5)) for _ in range(int(rng.integers(0, 4)))]
    clip = np.empty((frames, h, w, 3), dtype=np.uint8)
    for t in range(frames):
        image = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for x, y, rx, ry, grey, drift in clouds:  # clouds drift by: clutter, not a tag
            x += drift * t
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=(grey, grey, grey))
        if "sun" in present:
            x, y, r = sun
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 230, 90))
            for k in range(8):
                a = 2 * math.pi * k / 8 + 0.1 * t
                draw.line([x + 1.3 * r * math.cos(a), y + 1.3 * r * math.sin(a),
                           x + 1.9 * r * math.cos(a), y + 1.9 * r * math.sin(a)], fill=(255, 220, 80), width=1)
        if "balloon" in present:
            x, y, colour = balloon
            y -= 1.5 * t
            draw.ellipse([x - 4, y - 6, x + 4, y + 5], fill=colour)
            draw.line([x, y + 5, x, y + 12], fill=(40, 40, 40), width=1)
        if "bird" in present:
            x = (bird_x0 + bird_dir * 3 * t) % w
            flap = 2 if t % 2 else -1
            draw.line([x - 6, bird_y + flap, x, bird_y + 3, x + 6, bird_y + flap], fill=(20, 20, 20), width=2)
        if "snow" in present:
            flakes[:, 1] = (flakes[:, 1] + rng.uniform(0.5, 1.5, len(flakes))) % ground
            flakes[:, 0] = (flakes[:, 0] + rng.normal(0, 0.5, len(flakes))) % w
            for x, y in flakes:
                draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=(250, 250, 250))
        if "rain" in present:
            for _ in range(int(rng.integers(30, 60))):
                x, y = rng.uniform(0, w), rng.uniform(0, ground)
                draw.line([x, y, x - 2, y + 6], fill=(170, 180, 210), width=1)
        if "lightning" in present and t in flash:
            x = rng.uniform(0.2, 0.8) * w
            points = [(x, 0)]
            for y in np.linspace(0, ground, 6)[1:]:
                points.append((points[-1][0] + rng.uniform(-6, 6), y))
            draw.line(points, fill=(255, 255, 255), width=2)
        frame = np.asarray(image, dtype=np.float32)
        if "lightning" in present and t in flash:
            frame = frame * 1.6 + 40
        frame += rng.normal(0, 6, frame.shape)
        clip[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return clip, present


KINDS = {"shapes": (shapes_clip, SHAPES, (".mp4", ".mp4", ".gif")),
         "sky": (sky_clip, SKY, (".avi", ".avi", ".gif"))}


def write_colour_video(clip: np.ndarray, path: Path, fps: float = 8.0) -> Path:
    """Write a colour clip (T, H, W, 3) as MP4 (H.264), AVI (MPEG-4) or GIF."""
    from fractions import Fraction

    if path.suffix == ".gif":
        import imageio.v3 as iio

        iio.imwrite(path, clip, extension=".gif", duration=1000.0 / fps, loop=0)
        return path
    import av

    codec = "libx264" if path.suffix == ".mp4" else "mpeg4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        else:
            stream.bit_rate = 2_000_000
        for frame in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_folder(kind: str, folder: str | Path, clips: int = 2400, seed: int = 0) -> Path:
    """Write ``clips`` videos of ``kind`` into ``folder`` with ``labels.csv`` and ``tags.txt``."""
    make, vocabulary, suffixes = KINDS[kind]
    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(clips):
        clip, tags = make(rng)
        name = f"clips/{kind}-{i:05d}{suffixes[i % len(suffixes)]}"
        write_colour_video(clip, folder / name)
        rows.append({"file": name, "tags": " ".join(tags)})
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "tags"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "tags.txt").write_text("\n".join(vocabulary) + "\n")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("folder")
    parser.add_argument("--clips", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = make_folder(args.kind, args.folder, args.clips, args.seed)
    print(f"{args.clips} {args.kind} clips in {folder} (labels.csv, tags.txt)")


if __name__ == "__main__":
    main()
