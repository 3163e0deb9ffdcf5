"""Step functions and types for the storable-types tests (copied beside each test's workflow)."""

import dataclasses
import datetime
import decimal
import enum
import uuid

import numpy as np
import pandas as pd
import pydantic

import fanflow


class Split(enum.Enum):
    TRAIN = "train"
    TEST = "test"


@dataclasses.dataclass(frozen=True)
class Summary:
    rows: int
    mean: float
    split: Split
    taken: datetime.datetime
    weights: np.ndarray
    tags: frozenset = frozenset()
    note: str = dataclasses.field(default="", init=False)


class Config(pydantic.BaseModel):
    name: str
    lr: decimal.Decimal
    seen: set[int]
    when: datetime.date


def make_table(n: int) -> dict:
    frame = pd.DataFrame(
        {"x": np.arange(n, dtype=np.int64), "y": np.linspace(0, 1, n), "label": [f"c{i % 3}" for i in range(n)]},
        index=pd.Index([f"r{i}" for i in range(n)], name="row"),
    )
    summary = Summary(
        rows=n,
        mean=float(frame["y"].mean()),
        split=Split.TRAIN,
        taken=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
        weights=np.ones(4, dtype=np.float32),
        tags=frozenset({"b", "a"}),
    )
    return {"frame": frame, "summary": summary}


def describe(data: dict) -> dict:
    frame, summary = data["frame"], data["summary"]
    return {
        "frame_type": type(frame).__name__,
        "index": list(frame.index[:2]),
        "index_name": frame.index.name,
        "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
        "label_counts": frame["label"].value_counts().sort_index().to_dict(),
        "summary_type": type(summary).__name__,
        "is_summary": isinstance(summary, Summary),
        "split": summary.split.value,
        "taken": summary.taken.isoformat(),
        "weights": summary.weights.tolist(),
        "tags": sorted(summary.tags),
        "mean_matches": summary.mean == float(frame["y"].mean()),
    }


def make_config() -> Config:
    return Config(name="run", lr=decimal.Decimal("0.10"), seen={3, 1}, when=datetime.date(2024, 1, 2))


def read_config(config: Config) -> dict:
    return {"type": type(config).__name__, "lr": str(config.lr), "seen": sorted(config.seen),
            "when": config.when.isoformat(), "id": str(uuid.UUID(int=7))}


class Point:
    def __init__(self, x: int, y: int):
        self.x, self.y = x, y


def load_point(data: bytes) -> Point:
    x, y = data.decode().split(",")
    return Point(int(x), int(y))


def make_point() -> Point:
    fanflow.register_serializer(Point, dump=lambda p: f"{p.x},{p.y}".encode(), load=load_point, suffix=".txt")
    return Point(3, 4)


def unregistered_point() -> dict:
    return {"where": Point(1, 2)}


def norm(point: Point) -> float:
    return (point.x**2 + point.y**2) ** 0.5
