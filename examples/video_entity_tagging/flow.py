"""The reference workflow written in Python: the same validated spec as workflow.yaml."""

from fanflow import flow, item, params
from fanflow.ml.aggregate import tag_union
from fanflow.ml.select import top_k
from fanflow.ml.sources import clips
from fanflow.ml.train import fit
from fanflow.serving.gateway import serve_gateway
from fanflow.serving.model_server import serve_model

wf = flow(
    "video-entity-tagging",
    description="Tag the handwritten digits moving through short video clips, with a union of the two best models.",
    params={
        "seed": {"type": "int", "default": 0, "description": "Seed of the data and of every model."},
        "models": {"type": "list", "default": ["cnn", "cnn_dropout", "cnn_batchnorm", "cnn_motion", "logistic"],
                   "description": "The zoo trained in parallel (see fanflow.ml.models.MODELS)."},
        "top_k": {"type": "int", "default": 2, "description": "How many models to serve."},
        "min_accuracy": {"type": "float", "default": 0.90, "description": "The bar on the selection metric."},
        "metric": {"type": "str", "default": "jaccard",
                   "description": "Example-based accuracy: mean |predicted ∩ true| / |predicted ∪ true| per clip."},
        "train_clips": {"type": "int", "default": 6000, "description": "Training clips to generate."},
        "val_clips": {"type": "int", "default": 1000,
                      "description": "Validation clips (early stopping and selection)."},
        "test_clips": {"type": "int", "default": 1000, "description": "Held-out clips the report is made on."},
        "epochs": {"type": "int", "default": 0,
                   "description": "Training budget in passes over the data; 0 keeps each model's own."},
        "videos": {"type": "str", "default": "",
                   "description": "A folder of your own video files with a labels CSV (file, tags); "
                   "empty for the built-in moving digits."},
        "on_bad": {"type": "str", "default": "error", "choices": ["error", "skip"],
                   "description": "What a bad video file does: stop with an error naming it, or be skipped "
                   "and counted."},
        "strategy": {"type": "str", "default": "union",
                     "choices": ["union", "intersection", "majority", "mean", "weighted"],
                     "description": "How the gateway combines its members."},
    },
)

ingest = wf.step("ingest", with_={"videos": params.videos, "on_bad": params.on_bad, "seed": params.seed,
                                  "train": params.train_clips, "val": params.val_clips,
                                  "test": params.test_clips})(clips)

train = wf.step(
    "train",
    fan_out={"model": params.models},
    with_={"data": ingest.output, "model": item.model, "seed": params.seed, "epochs": params.epochs},
    resources={"cpus": 1},
    retries=1,
)(fit)

select = wf.step(
    "select",
    with_={"candidates": train.all(), "k": params.top_k, "metric": params.metric, "at_least": params.min_accuracy},
    min_success=2,
    executor="thread",
)(top_k)

serve = wf.step("serve", kind="service", fan_out={"model": select.output}, with_={"model": item.model})(serve_model)

gateway = wf.step("gateway", kind="service", with_={"members": serve.all(), "strategy": params.strategy})(
    serve_gateway
)

aggregate = wf.step("aggregate", with_={"gateway": gateway.output, "members": serve.all(), "data": ingest.output})(
    tag_union
)
