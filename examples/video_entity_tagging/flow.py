"""The reference workflow written in Python: the same validated spec as workflow.yaml."""

from fanflow import flow, item, params
from fanflow.ml.aggregate import tag_clips
from fanflow.ml.select import choose, require_bar
from fanflow.ml.sources import clips
from fanflow.ml.train import fit
from fanflow.serving.gateway import serve_gateway
from fanflow.serving.model_server import serve_model


def typed(kind: str, default, description: str, **extra) -> dict:
    return {"type": kind, "default": default, "description": description, **extra}


PARAMS = {
    "seed": typed("int", 0, "Seed of the data and of every model."),
    "models": typed("list", ["cnn_wide", "cnn_wide_motion", "cnn_even", "cnn_odd", "logistic"],
                    "The zoo trained in parallel (see fanflow.ml.models.MODELS)."),
    "top_k": typed("int", 2, "How many models to serve."),
    "min_accuracy": typed("float", 0.90, "The bar on the selection metric, on validation."),
    "margin": typed("float", 0.05, "How far a model must score above both trivial predictors (one that emits "
                    "nothing, one that emits every tag) on validation; the bar is raised to that where it is lower."),
    "metric": typed("str", "jaccard", "Example-based accuracy: mean |predicted ∩ true| / |predicted ∪ true| per clip."),
    "selection": typed("str", "ensemble", "ensemble: add, one at a time, the model whose combination with those "
                       "kept does best on validation; top_k: the best models alone.", choices=["ensemble", "top_k"]),
    "strategy": typed("str", "auto", "How the gateway combines its members; auto: the one that does best on "
                      "validation.", choices=["auto", "mean", "union", "majority", "intersection"]),
    "videos": typed("str", "", "A folder of your own video files with a labels CSV (file, tags); empty for the "
                    "built-in moving digits."),
    "labels": typed("str", "labels.csv", "The labels CSV inside the videos folder (or an absolute path)."),
    "on_bad": typed("str", "error", "What a bad video file does: stop with an error naming it, or be skipped "
                    "and counted.", choices=["error", "skip"]),
    "frames": typed("int", 0, "Frames per clip; 0: 8 for the digits, the videos' median (4 to 16) for a folder."),
    "size": typed("int", 0, "Side of a clip's frames in pixels; 0: 32 for the digits, the videos' median (at "
                  "most 64) for a folder."),
    "train_clips": typed("int", 0, "Training clips of the built-in digits (0: 6000); a folder's clips are all used."),
    "val_clips": typed("int", 0, "Validation clips of the built-in digits (0: 1000)."),
    "test_clips": typed("int", 0, "Held-out test clips of the built-in digits (0: 1000)."),
    "epochs": typed("int", 8, "Training budget in passes over the training clips, before min_steps and "
                    "max_steps apply."),
    "min_steps": typed("int", 1500, "At least this many optimiser steps: a small data set gets more passes."),
    "max_steps": typed("int", 6000, "At most this many optimiser steps: a large data set gets fewer passes."),
    "batch_size": typed("int", 32, "Clips per optimiser step."),
    "patience": typed("int", 3, "Stop after this many epochs (rounds) without a lower validation loss."),
    "min_epochs": typed("int", 0, "Epochs after the learning-rate warm-up before early stopping may stop; 0: a "
                        "quarter of the budget."),
    "threshold": typed("float", 0.0, "Every model's decision threshold; 0 tunes it on validation."),
    "thresholds": typed("str", "model", "Tune one threshold per model, or one per model and entity (fits "
                        "validation closer; can transfer worse to new clips).", choices=["model", "entity"]),
    "caveat": typed("str", "", "A sentence the leaderboard and the report print first (the quick preset's says "
                    "its numbers are not meaningful)."),
}
PRESETS = {
    "quick": {
        "description": "A smoke test of the whole workflow in under a minute on 2 cores: tiny data, two small "
                       "models, one pass, no bar. Its numbers are not meaningful.",
        "params": {"models": ["cnn_even", "logistic"], "train_clips": 300, "val_clips": 100, "test_clips": 100,
                   "epochs": 1, "min_steps": 0, "max_steps": 20, "min_accuracy": 0.0, "margin": -1.0,
                   "caveat": "Quick preset: tiny data and a single pass of training; these numbers are not "
                             "meaningful (run without --preset for real ones)."},
    },
}
TRAINING = ["epochs", "min_steps", "max_steps", "batch_size", "patience", "min_epochs", "threshold", "thresholds"]
RECORDED = ["seed", "models", "top_k", "min_accuracy", "margin", "selection", "strategy", "videos", "frames", "size",
            *TRAINING]

wf = flow("video-entity-tagging",
          description="Tag the entities in short video clips with an ensemble of models chosen on validation.",
          params=PARAMS, presets=PRESETS)

ingest = wf.step("ingest", with_={
    "videos": params.videos, "labels": params.labels, "on_bad": params.on_bad, "seed": params.seed,
    "train": params.train_clips, "val": params.val_clips, "test": params.test_clips,
    "frames": params.frames, "size": params.size})(clips)

train = wf.step(
    "train",
    fan_out={"model": params.models},
    with_={"data": ingest.output, "model": item.model, "seed": params.seed,
           "training": {name: getattr(params, name) for name in TRAINING}},
    resources={"cpus": 1},
    retries=1,
)(fit)

select = wf.step(
    "select",
    with_={"candidates": train.all(), "data": ingest.output, "k": params.top_k, "metric": params.metric,
           "at_least": params.min_accuracy, "margin": params.margin, "policy": params.selection,
           "strategy": params.strategy, "caveat": params.caveat, "run": {name: getattr(params, name) for name in RECORDED}},
    min_success=1,
    executor="thread",
)(choose)

bar = wf.step("bar", with_={"selection": select.output}, executor="thread")(require_bar)

serve = wf.step("serve", kind="service", fan_out={"model": bar.output}, with_={"model": item.model})(serve_model)

gateway = wf.step("gateway", kind="service", with_={
    "members": serve.all(), "strategy": select.output.aggregation.strategy,
    "threshold": select.output.aggregation.threshold})(serve_gateway)

aggregate = wf.step("aggregate", with_={"gateway": gateway.output, "members": serve.all(),
                                        "selection": select.output, "data": ingest.output})(tag_clips)
