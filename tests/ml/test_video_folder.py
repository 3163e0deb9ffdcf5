"""A user's own videos: a folder of MP4 / AVI / GIF files and a labels CSV."""

import csv

import av
import numpy as np
import pytest

from fanflow.ml import DataError, ParameterError
from fanflow.ml.report import offline_report
from fanflow.ml.select import choose
from fanflow.ml.sources import clips as reference_clips
from fanflow.ml.sources import moving_digits, video_folder
from fanflow.ml.train import fit
from fanflow.ml.video import write_video

from .helpers import TINY_CNN


def make_folder(folder, n=12, seed=0):
    """n small videos of moving digits (GIF, MP4 and AVI in turn) and their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = moving_digits(seed=seed, train=n, val=1, test=1, previews=0)["train"]
    rows = []
    for i in range(n):
        name = f"clip{i:02d}.{('gif', 'mp4', 'avi')[i % 3]}"
        write_video(clips["x"][i], folder / name, scale=2)  # 64×64 pixels on disk
        rows.append({"file": name, "tags": " ".join(str(d) for d in np.flatnonzero(clips["y"][i]))})
    write_labels(folder / "labels.csv", rows)
    return clips, rows


def write_labels(path, rows, fields=("file", "tags")):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def write_empty_avi(path):
    out = av.open(str(path), "w")
    stream = out.add_stream("mjpeg", rate=4)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuvj420p"
    out.start_encoding()
    out.close()


def test_reads_every_format_and_keeps_the_labels(tmp_path):
    clips, rows = make_folder(tmp_path / "videos")
    data = video_folder(tmp_path / "videos", frames=8, size=32, seed=0)
    assert data["tags"] == sorted({t for r in rows for t in r["tags"].split()})
    seen = []
    for split in ("train", "val", "test"):
        x, y = data[split]["x"], data[split]["y"]
        assert x.dtype == np.uint8 and x.shape[1:] == (8, 32, 32) and len(x) == len(y) >= 1
        for i, name in enumerate(data[split]["files"]):
            k = int(name[4:6])
            assert [data["tags"][j] for j in np.flatnonzero(y[i])] == rows[k]["tags"].split()
            # decoded, shrunk back to 32×32: close to the clip the video was made from
            assert np.abs(x[i] / 255 - clips["x"][k] / 255).mean() < 0.06
            seen.append(name)
    assert sorted(seen) == sorted(r["file"] for r in rows)
    assert data["report"]["clips"] == {"train": 8, "val": 2, "test": 2}
    assert data["report"]["skipped"] == 0
    assert video_folder(tmp_path / "videos", seed=0)["val"]["files"] == data["val"]["files"]


def test_a_split_column_decides_the_split(tmp_path):
    _, rows = make_folder(tmp_path / "v", n=6)
    for i, row in enumerate(rows):
        row["split"] = ["train", "train", "train", "val", "test", "test"][i]
    write_labels(tmp_path / "v" / "labels.csv", rows, ("file", "tags", "split"))
    data = video_folder(tmp_path / "v")
    assert data["test"]["files"] == ["clip04.mp4", "clip05.avi"]


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    make_folder(tmp_path / "v", n=6)
    (tmp_path / "v" / "clip03.gif").unlink()
    with pytest.raises(DataError, match=r"clip03\.gif: no such file"):
        video_folder(tmp_path / "v")


def test_an_unreadable_video_is_an_error_naming_it(tmp_path):
    make_folder(tmp_path / "v", n=6)
    (tmp_path / "v" / "clip01.mp4").write_bytes(b"not a video at all" * 20)
    with pytest.raises(DataError, match=r"clip01\.mp4: unreadable video"):
        video_folder(tmp_path / "v")


def test_an_unknown_tag_is_an_error_naming_the_file_and_the_tag(tmp_path):
    _, rows = make_folder(tmp_path / "v", n=6)
    (tmp_path / "v" / "tags.txt").write_text("\n".join(str(d) for d in range(10)))
    rows[2]["tags"] = "3 cat"
    write_labels(tmp_path / "v" / "labels.csv", rows)
    with pytest.raises(DataError, match=r"line 4: unknown tag 'cat' for 'clip02.avi'"):
        video_folder(tmp_path / "v")


def test_an_empty_clip_is_an_error_naming_it(tmp_path):
    _, rows = make_folder(tmp_path / "v", n=6)
    write_empty_avi(tmp_path / "v" / "empty.avi")
    write_labels(tmp_path / "v" / "labels.csv", [*rows, {"file": "empty.avi", "tags": "1"}])
    with pytest.raises(DataError, match=r"empty\.avi: empty clip"):
        video_folder(tmp_path / "v")


def test_a_tags_file_is_found_beside_the_labels_of_a_relative_folder(tmp_path, monkeypatch):
    make_folder(tmp_path / "data" / "x", n=6)
    (tmp_path / "data" / "x" / "tags.txt").write_text("\n".join(str(d) for d in range(10)))
    monkeypatch.chdir(tmp_path)
    data = video_folder("data/x", frames=8, size=32)
    assert data["tags"] == [str(d) for d in range(10)]


def test_frames_and_size_come_from_the_videos_when_not_given(tmp_path):
    make_folder(tmp_path / "v", n=6)  # 8 frames of 64×64 pixels on disk
    data = video_folder(tmp_path / "v")
    assert data["train"]["x"].shape[1:] == (8, 64, 64)
    assert data["report"]["frames"] == 8 and data["report"]["size"] == [64, 64]
    assert "median" in data["report"]["format_from"]
    assert video_folder(tmp_path / "v", frames=4, size=32)["train"]["x"].shape[1:] == (4, 32, 32)


def test_clip_counts_are_for_the_built_in_digits_only(tmp_path):
    make_folder(tmp_path / "v", n=6)
    with pytest.raises(ParameterError, match="train_clips: apply to the built-in moving digits only"):
        reference_clips(videos=str(tmp_path / "v"), train=100)
    assert len(reference_clips(train=20, val=5, test=5)["train"]["x"]) == 20


def test_on_bad_skip_leaves_bad_files_out_and_counts_them(tmp_path, capsys):
    _, rows = make_folder(tmp_path / "v", n=9)
    folder = tmp_path / "v"
    (folder / "tags.txt").write_text("\n".join(str(d) for d in range(10)))
    (folder / "clip00.gif").unlink()
    (folder / "clip01.mp4").write_bytes(b"garbage" * 50)
    write_empty_avi(folder / "empty.avi")
    rows[2]["tags"] = "owl"
    write_labels(folder / "labels.csv", [*rows, {"file": "empty.avi", "tags": "1"}])
    data = video_folder(folder, on_bad="skip")
    report = data["report"]
    assert report["skipped"] == 4
    assert sorted(s["file"] for s in report["skipped_files"]) == ["clip00.gif", "clip01.mp4", "clip02.avi",
                                                                  "empty.avi"]
    assert sum(report["clips"].values()) == 6
    assert data["tags"] == [str(d) for d in range(10)]
    assert "video_folder: skipped 4 bad file(s) of 10 (on_bad=skip)" in capsys.readouterr().out


def test_labels_file_problems(tmp_path):
    make_folder(tmp_path / "v", n=3)
    with pytest.raises(DataError, match=r"nothere\.csv: no such labels file"):
        video_folder(tmp_path / "v", labels="nothere.csv")
    (tmp_path / "v" / "bad.csv").write_text("name,labels\nclip00.gif,1\n")
    with pytest.raises(DataError, match=r"bad\.csv: expected a header with columns 'file' and 'tags'"):
        video_folder(tmp_path / "v", labels="bad.csv")
    with pytest.raises(ValueError, match="on_bad: expected 'error' or 'skip'"):
        video_folder(tmp_path / "v", on_bad="ignore")


def test_a_folder_of_videos_runs_through_the_same_steps(tmp_path, scratch):
    """ingest → train fan-out → select → report, on the user's own files."""
    make_folder(tmp_path / "v", n=30, seed=1)
    data = video_folder(tmp_path / "v", frames=8, size=32, seed=0)
    trained = [fit(data, "cnn", params=TINY_CNN, seed=0),
               fit(data, "cnn_batchnorm", params=TINY_CNN, seed=0),
               fit(data, "logistic", n_templates=8, max_rounds=2)]
    for t in trained:
        assert t["model"].is_file() and t["metrics"]["test"]["clips"] == len(data["test"]["x"])
    selection = choose(trained, data, k=2, at_least=0.0, margin=-1.0)
    assert selection["passed"] and [c["rank"] for c in selection["models"]] == [1, 2]
    report = offline_report(data, selection)
    assert report["html"].is_file() and report["chart"].stat().st_size > 1000
    assert report["summary"]["clips"] == len(data["test"]["x"])
