"""Faults injected into a real artifact store: a flipped bit, a damaged object, objects gone.
The wrong answer never reaches a step, a re-run repairs the store, and a cache hit whose
artifacts are gone or damaged is not a hit."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from fanflow.spec.loader import load_workflow
from fanflow.stores.artifacts import ArtifactStore, IntegrityError, sha256_file
from fanflow.stores.values import decode, encode
from tests.conftest import cli
from tests.engine.drive import run_workflow as run

SUMS = """
name: sums
params: {n: 100000}
steps:
  make: {uses: fault_steps:arange, with: {n: "${params.n}"}}
  total: {uses: fault_steps:total, with: {values: "${make}"}}
"""
RIGHT = 4999950000  # the sum of 0 .. 99,999


def flip_bit(path: Path, offset: int, bit: int = 6) -> None:
    """Flip one bit in a stored file, as a bad disk or a stray write would."""
    os.chmod(path, 0o644)  # stored objects are read-only; the fault is not
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def objects(home: Path, suffix: str) -> list[Path]:
    return sorted((home / "artifacts" / "objects").glob(f"*/*{suffix}"))


def test_a_flipped_bit_in_an_array_is_refused_before_a_step_sees_it(flows, home):
    first = run(home, load_workflow(flows(SUMS)))
    assert first.outputs("total") == [RIGHT]
    [array] = objects(home, ".npy")
    flip_bit(array, array.stat().st_size - 8 * 10 + 7)  # the high byte of an element near the end
    store = ArtifactStore(home / "artifacts")
    with pytest.raises(IntegrityError, match="is damaged"):
        decode(first.tasks["make"].output, store)  # what every worker does before calling a step
    assert not array.exists()
    assert len(list((home / "artifacts" / "quarantine").iterdir())) == 1


def test_a_flipped_bit_is_repaired_by_the_next_run_and_never_cached_as_an_answer(flows, home):
    flow = flows(SUMS)
    cli("run", flow, "--home", home, check=True)
    [array] = objects(home, ".npy")
    flip_bit(array, array.stat().st_size - 8 * 10 + 7)
    for options in (["--no-cache"], []):  # recomputed, and then reused: both right
        result = cli("run", flow, "--home", home, "--json", *options, check=True)
        assert json.loads(result.stdout)["results"]["total"] == RIGHT
        assert sha256_file(array) == "sha256:" + array.name.removesuffix(".npy")  # the store is repaired


def test_a_cached_run_whose_array_was_damaged_runs_its_producer_again_and_says_why(flows, home):
    flow = flows(SUMS)
    cli("run", flow, "--home", home, check=True)
    [array] = objects(home, ".npy")
    flip_bit(array, 200)
    result = json.loads(cli("run", flow, "--home", home, "--json", check=True).stdout)
    assert result["results"]["total"] == RIGHT
    assert result["cached"] == 1  # the sum, made from the same (good) bytes; not the array
    shown = cli("show", result["run"], "make", "--home", home, check=True).stdout
    assert "ran again: its earlier output could not be reused" in shown and "is damaged" in shown


def test_a_damaged_file_artifact_is_refused_and_a_bytes_artifact_is_replaced_on_rewrite(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "notes.txt"
    source.write_text("the right words", encoding="utf-8")
    manifest = encode({"file": source, "raw": b"\x00" * 4096}, store)
    for ref in manifest.values():
        flip_bit(store.path(ref["$artifact"], ref["suffix"], verify=False), 3)
    with pytest.raises(IntegrityError):
        decode({"file": manifest["file"]}, store)  # a path handed to a step is checked too
    with pytest.raises(IntegrityError):
        decode({"raw": manifest["raw"]}, store)
    # Writing the same content again puts a good copy in place of the one that was moved aside.
    again = encode({"raw": b"\x00" * 4096}, store)
    assert again["raw"]["$artifact"] == manifest["raw"]["$artifact"]
    assert decode(again, store)["raw"] == b"\x00" * 4096


def test_a_damaged_bytes_object_is_replaced_when_its_producer_runs_again(flows, home):
    spec = load_workflow(flows("""
        name: blobs
        steps:
          make: {uses: fault_steps:blob, with: {n: 64}}
          digest: {uses: fault_steps:blob_digest, with: {data: "${make}"}}
    """))
    right = hashlib.sha256(bytes(range(256)) * 64).hexdigest()
    assert run(home, spec).outputs("digest") == [right]
    [stored] = objects(home, ".bin")
    flip_bit(stored, 1000)
    again = run(home, spec, cache=False)  # the producer runs again; its write replaces the bad object
    assert again.state == "succeeded" and again.outputs("digest") == [right]
    assert sha256_file(stored) == "sha256:" + stored.name.removesuffix(".bin")
    assert all(t.cached for t in run(home, spec).tasks.values())


def test_a_fully_cached_run_whose_artifacts_were_deleted_runs_again(flows, home):
    flow = flows(SUMS)
    first = json.loads(cli("run", flow, "--home", home, "--json", check=True).stdout)
    assert first["cached"] == 0
    shutil.rmtree(home / "artifacts" / "objects")
    second = cli("run", flow, "--home", home, "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["results"]["total"] == RIGHT and report["cached"] == 1  # the array was made again
    [array] = objects(home, ".npy")  # the outputs it reports exist again
    third = json.loads(cli("run", flow, "--home", home, "--json", check=True).stdout)
    assert third["cached"] == 2 and third["results"]["total"] == RIGHT
    assert array.exists()


def test_doctor_finds_a_flip_that_the_stamps_cannot_see_and_quarantines_it(flows, home):
    run(home, load_workflow(flows(SUMS)))
    [array] = objects(home, ".npy")
    flip_bit(array, 500)
    stamp = home / "artifacts" / "stamps" / array.parent.name / array.name
    st = array.stat()  # the stamp rewritten to match, as bit rot under the file system would leave it
    stamp.write_text(f"{st.st_size} {st.st_ino} {st.st_dev} {st.st_mtime_ns} {st.st_ctime_ns}")
    result = cli("doctor", "--home", home)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 damaged, moved to quarantine" in result.stdout and array.name in result.stdout
    assert not array.exists()
    assert "cache: 1 entries point to missing artifacts" in result.stdout
    repaired = cli("doctor", "--repair", "--home", home)
    assert "(dropped)" in repaired.stdout, repaired.stdout
    assert cli("doctor", "--home", home).returncode == 0  # nothing damaged is left
