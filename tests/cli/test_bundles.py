"""Bundles: a workflow packed with its code and pinned requirements, run elsewhere."""

import json
import shutil
import zipfile

from fanflow import bundle
from tests.conftest import cli, write


def _project(tmp_path):
    source = tmp_path / "project"
    (source / "helpers").mkdir(parents=True)
    write(source / "helpers", "__init__.py", "")
    write(source / "helpers", "maths.py", "import numpy as np\n\n\ndef double(x):\n    return int(np.int64(x) * 2)\n")
    write(source, "steps.py", "from helpers.maths import double\n\n\ndef run(n):\n    return [double(i) for i in range(n)]\n")
    write(source, "unused.py", "raise RuntimeError('never packed')\n")
    return write(source, "flow.yaml", "name: packed\nparams: {n: 3}\nsteps:\n  s: {uses: steps:run, with: {n: '${params.n}'}}\n")


def test_pack_holds_the_workflow_its_modules_and_pins(tmp_path):
    path = bundle.pack(_project(tmp_path), tmp_path / "out")
    assert path.name.startswith("packed-") and path.suffix == ".fanflow"
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read("bundle.json"))
    assert names == ["bundle.json", "files/flow.yaml", "files/helpers/__init__.py", "files/helpers/maths.py",
                     "files/requirements.txt", "files/steps.py"]
    assert manifest["workflow"] == "flow.yaml" and manifest["name"] == "packed"
    assert any(r.startswith("numpy==") for r in manifest["requirements"])
    assert path.name == f"packed-{manifest['version'][:12]}.fanflow"


def test_the_same_content_gives_the_same_bundle_byte_for_byte(tmp_path):
    flow = _project(tmp_path)
    first = bundle.pack(flow, tmp_path / "a").read_bytes()
    second = bundle.pack(flow, tmp_path / "b").read_bytes()
    assert first == second
    (flow.parent / "steps.py").write_text("def run(n):\n    return n\n")
    assert bundle.pack(flow, tmp_path / "c").read_bytes() != first


def test_a_bundle_runs_elsewhere_from_the_command_line(tmp_path):
    packed = cli("pack", _project(tmp_path), "-o", tmp_path / "out", check=True).stdout.strip()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(packed, elsewhere)
    shutil.rmtree(tmp_path / "project")  # the original files are gone
    result = cli("run", elsewhere / packed.split("/")[-1], "-p", "n=4", "--json", "--home", elsewhere / "h",
                 cwd=elsewhere, env={"FANFLOW_HOME": str(elsewhere / "h")}, check=True)
    assert json.loads(result.stdout)["results"]["s"] == [0, 2, 4, 6]


def test_a_tampered_bundle_is_refused(tmp_path):
    path = bundle.pack(_project(tmp_path), tmp_path / "out")
    tampered = tmp_path / "tampered.fanflow"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "files/steps.py":
                data += b"\nimport os\n"
            dst.writestr(name, data)
    result = cli("run", tampered, "--home", tmp_path / "h", env={"FANFLOW_HOME": str(tmp_path / "h")})
    assert result.returncode == 2
    assert "was changed after it was packed" in result.stderr and "Traceback" not in result.stderr


def test_a_bundle_with_a_flipped_byte_is_not_a_valid_bundle(tmp_path):
    path = bundle.pack(_project(tmp_path), tmp_path / "out")
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("files/steps.py")
    data = bytearray(path.read_bytes())
    # A byte inside the compressed text of steps.py: a broken deflate stream or a bad CRC.
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0xFF
    damaged = tmp_path / "damaged.fanflow"
    damaged.write_bytes(bytes(data))
    for command in (["run", damaged], ["validate", damaged]):
        result = cli(*command, "--home", tmp_path / "h") if command[0] == "run" else cli(*command)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {damaged}: not a valid fanflow bundle ("), line
