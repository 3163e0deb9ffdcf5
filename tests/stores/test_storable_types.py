"""Values beyond plain JSON: tables, dataclasses, pydantic models, datetimes, sets, ... stored
without pickle, in a real run between worker processes and through the artifact store."""

import dataclasses
import datetime
import decimal
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fanflow.spec.loader import load_workflow
from fanflow.stores.artifacts import ArtifactStore
from fanflow.stores.values import UnstorableValue, decode, encode
from tests.conftest import write
from tests.engine.drive import run_workflow as run

STEPS = Path(__file__).with_name("typedsteps.py")


@pytest.fixture
def flows(workdir):
    shutil.copy(STEPS, workdir / "typedsteps.py")
    return workdir


def test_a_dataframe_and_a_dataclass_returned_by_one_step_are_read_by_the_next(flows, home):
    spec = load_workflow(write(flows, "tables.yaml", """
        name: tables
        steps:
          make: {uses: "typedsteps:make_table", with: {n: 7}}
          read: {uses: "typedsteps:describe", with: {data: "${make}"}}
        """))
    result = run(home, spec)
    assert result.state == "succeeded", result.error
    seen = result.outputs("read")[0]
    assert seen["frame_type"] == "DataFrame" and seen["index"] == ["r0", "r1"] and seen["index_name"] == "row"
    assert seen["dtypes"] == {"x": "int64", "y": "float64", "label": seen["dtypes"]["label"]}
    assert seen["label_counts"] == {"c0": 3, "c1": 2, "c2": 2}
    assert seen["summary_type"] == "Summary" and seen["is_summary"] and seen["split"] == "train"
    assert seen["taken"] == "2024-05-01T12:30:00+00:00" and seen["weights"] == [1.0] * 4
    assert seen["tags"] == ["a", "b"] and seen["mean_matches"]
    # The table is a Parquet file that other tools read; the dataclass is JSON with its type.
    manifest = result.tasks["make"].output
    assert manifest["frame"]["format"] == "parquet" and manifest["frame"]["rows"] == 7
    table = pq.read_table(ArtifactStore(home / "artifacts").path(manifest["frame"]["$artifact"], ".parquet"))
    assert table.column_names[:3] == ["x", "y", "label"]
    assert manifest["summary"]["$value"] == "dataclass" and manifest["summary"]["type"] == "typedsteps:Summary"
    assert manifest["summary"]["data"]["split"] == {"$value": "enum", "type": "typedsteps:Split", "data": "train"}


def test_a_pydantic_model_travels_with_its_field_types(flows, home):
    spec = load_workflow(write(flows, "model.yaml", """
        name: model
        steps:
          make: {uses: "typedsteps:make_config"}
          read: {uses: "typedsteps:read_config", with: {config: "${make}"}}
        """))
    result = run(home, spec)
    assert result.state == "succeeded", result.error
    assert result.outputs("read")[0] == {"type": "Config", "lr": "0.10", "seen": [1, 3], "when": "2024-01-02",
                                         "id": str(uuid.UUID(int=7))}


def test_a_registered_serializer_stores_a_type_and_a_reader_needs_nothing_registered(flows, home):
    spec = load_workflow(write(flows, "points.yaml", """
        name: points
        steps:
          make: {uses: "typedsteps:make_point"}
          norm: {uses: "typedsteps:norm", with: {point: "${make}"}}
        """))
    result = run(home, spec)
    assert result.state == "succeeded", result.error
    assert result.outputs("norm") == [5.0]
    ref = result.tasks["make"].output
    assert ref["format"] == "serialized" and ref["loader"] == "typedsteps:load_point" and ref["suffix"] == ".txt"


def test_an_unknown_type_fails_with_the_type_and_how_to_register_a_serializer(flows, home):
    spec = load_workflow(write(flows, "bad.yaml", "name: bad\nsteps:\n  a: {uses: 'typedsteps:unregistered_point'}\n"))
    result = run(home, spec)
    error = result.tasks["a"].error
    assert result.state == "failed" and result.tasks["a"].attempt == 1
    assert "a output.where: cannot store a typedsteps.Point" in error
    assert "fanflow.register_serializer(Point, dump=..., load=...)" in error and "pandas DataFrames" in error


@dataclasses.dataclass
class Local:
    when: datetime.time
    span: datetime.timedelta


def test_scalars_and_sets_round_trip_through_a_manifest_of_plain_json(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    value = {
        "at": datetime.datetime(2024, 2, 29, 23, 59, 59, 123456),
        "day": datetime.date(2024, 2, 29),
        "span": datetime.timedelta(days=-1, seconds=5, microseconds=7),
        "price": decimal.Decimal("19.990"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "seen": {3, 1, 2},
        "frozen": frozenset({"x"}),
        "pair": (1, 2),
        "scalar": np.float64("nan"),
        "table": pa.table({"a": [1, 2]}),
        "local": Local(datetime.time(1, 2, 3), datetime.timedelta(hours=5)),
    }
    manifest = encode(value, store)
    assert json.loads(json.dumps(manifest)) == manifest  # plain JSON all the way
    assert manifest["seen"] == {"$value": "set", "data": [1, 2, 3]}  # a stable order
    back = decode(manifest, store)
    same = ["at", "day", "span", "price", "id", "seen", "frozen", "local"]
    assert {k: back[k] for k in same} == {k: value[k] for k in same}
    assert type(back["frozen"]) is frozenset and type(back["local"]) is Local
    assert back["pair"] == [1, 2]  # tuples travel as JSON lists (fan-out and ${x[0]} read them)
    assert np.isnan(back["scalar"]) and back["table"].equals(value["table"])


def test_a_class_that_no_reader_could_import_is_refused_when_stored(tmp_path):
    @dataclasses.dataclass
    class Inner:
        x: int

    with pytest.raises(UnstorableValue, match=r"output.v: cannot store a .*Inner defined in __main__ or inside"):
        encode({"v": Inner(1)}, ArtifactStore(tmp_path / "a"))


def test_a_dataframe_keeps_its_index_and_dtypes(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-01", "2024-01-02"]), "n": [1, 2]},
                         index=pd.Index(["a", "b"], name="key"))
    back = decode(encode(frame, store), store)
    pd.testing.assert_frame_equal(back, frame)
