"""Reading clips from video files and writing clips as videos a person can watch.

A clip is a float32 array (T, H, W) of grey levels in [0, 1]. Reading decodes with PyAV
(MP4, AVI, GIF and whatever else FFmpeg reads); ``.npy`` files holding one clip are read too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fanflow.ml.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm")


def _hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if h < 4 or w < 4:
        raise DataError(f"size must be at least 4×4 pixels, got {size!r}")
    return h, w


def _resize(frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if frame.shape == hw:
        return frame
    from PIL import Image

    # Pillow's bilinear filter widens its support when shrinking, so it averages like an
    # area filter and small videos keep thin strokes instead of aliasing them away.
    image = Image.fromarray(frame).resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _pick(n: int, frames: int) -> np.ndarray:
    """Indices of ``frames`` frames spread evenly over ``n`` (repeating when n < frames)."""
    return np.round(np.linspace(0, n - 1, frames)).astype(int)


def read_clip(path: str | Path, frames: int = 8, size: int | tuple[int, int] = 32) -> np.ndarray:
    """Decode ``path`` into a float32 clip (frames, H, W) in [0, 1].

    Frames are converted to grey, resized to ``size`` and sampled evenly over the whole
    video. A missing file, a file that does not decode, or a video without frames raises
    :class:`DataError` naming the file.
    """
    path = Path(path)
    hw = _hw(size)
    if frames < 1:
        raise DataError(f"frames must be at least 1, got {frames!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        return _read_npy_clip(path, frames, hw)
    decoded = _decode(path, hw)
    if not decoded:
        raise DataError(f"{path}: empty clip (the video has no frames)")
    clip = np.stack([decoded[i] for i in _pick(len(decoded), frames)])
    return clip.astype(np.float32) / 255.0


def probe(path: str | Path) -> tuple[int, int, int]:
    """(frames, height, width) of a video, from its header where it says (decoding it to
    count the frames where it does not). Raises DataError like ``read_clip``."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        shape = _read_npy_shape(path)
        return shape
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: not a video (no video stream)")
            stream = container.streams.video[0]
            height, width, frames = stream.codec_context.height, stream.codec_context.width, stream.frames
            if not frames:
                frames = sum(1 for _ in container.decode(video=0))
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable video ({type(e).__name__}: {e})") from None
    if not frames:
        raise DataError(f"{path}: empty clip (the video has no frames)")
    return int(frames), int(height), int(width)


def _read_npy_shape(path: Path) -> tuple[int, int, int]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable .npy clip ({e})") from None
    if array.ndim != 3 or array.shape[0] == 0:
        raise DataError(f"{path}: expected a non-empty numeric array (T, H, W), got shape {array.shape}")
    return tuple(int(s) for s in array.shape)


def _decode(path: Path, hw: tuple[int, int]) -> list[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: not a video (no video stream)")
            return [_resize(f.to_ndarray(format="gray"), hw) for f in container.decode(video=0)]
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable video ({type(e).__name__}: {e})") from None


def _read_npy_clip(path: Path, frames: int, hw: tuple[int, int]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable .npy clip ({e})") from None
    if array.ndim != 3 or array.dtype.kind not in "uif":
        raise DataError(f"{path}: expected a numeric array (T, H, W), got {array.dtype} {array.shape}")
    if array.shape[0] == 0:
        raise DataError(f"{path}: empty clip (the array has no frames)")
    grey = to_unit(array)
    picked = grey[_pick(len(grey), frames)]
    if picked.shape[1:] != hw:
        picked = np.stack([_resize((f * 255).round().astype(np.uint8), hw) for f in picked]) / 255.0
    return picked.astype(np.float32)


def to_unit(array: np.ndarray) -> np.ndarray:
    """Grey levels as float32 in [0, 1]: uint8 is divided by 255, floats are taken as they are."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(np.asarray(array, dtype=np.float32), 0.0, 1.0)


def to_uint8(clip: np.ndarray) -> np.ndarray:
    if clip.dtype == np.uint8:
        return np.asarray(clip)
    return (np.clip(clip, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def write_video(clip: np.ndarray, path: str | Path, fps: float = 4.0, scale: int = 4) -> Path:
    """Write a clip (T, H, W) as a GIF, MP4 or AVI (chosen by the suffix), each pixel blown
    up to ``scale``×``scale`` so that a 32×32 clip is big enough to watch."""
    path = Path(path)
    frames = to_uint8(np.asarray(clip))
    if frames.ndim != 3 or len(frames) == 0:
        raise DataError(f"{path}: a clip to write must be a non-empty (T, H, W) array, got {frames.shape}")
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        import imageio.v3 as iio

        iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    elif suffix in (".mp4", ".avi"):
        _write_ffmpeg(frames, path, fps, codec="libx264" if suffix == ".mp4" else "mpeg4")
    else:
        raise DataError(f"{path}: cannot write {suffix!r} videos (expected .gif, .mp4 or .avi)")
    return path


def _write_ffmpeg(frames: np.ndarray, path: Path, fps: float, codec: str) -> None:
    from fractions import Fraction

    import av

    # yuv420p needs even sides.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12"}
        else:
            stream.bit_rate = 4_000_000
        for frame in frames:
            rgb = np.repeat(frame[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
