"""Stage 5: pretrained keras-hub `BertBackbone` + pooling + dropout + dense = logits.

>>> backbone = load_backbone(ckpt, dropout=0.1)
>>> model = build_classifier(backbone, num_labels=6, pooling="cls", dropout=0.1)
>>> model(next(iter(train))[0]).shape
TensorShape([32, 6])
"""

import hashlib
from pathlib import Path

import keras
import keras_hub
import numpy as np

from bert_keras import rundir
from bert_keras.checkpoint import Checkpoint
from bert_keras.errors import UsageError, cause

INPUTS = ("token_ids", "segment_ids", "padding_mask")


def load_backbone(ckpt: Checkpoint, dropout: float) -> keras_hub.models.BertBackbone:
    """keras-hub converts a Hugging Face folder (or `hf://` id) itself, offline for folders."""
    try:
        return keras_hub.models.BertBackbone.from_preset(ckpt.source, dropout=dropout)
    except Exception as e:  # offline, unknown preset, missing tensors: all end the same way
        raise UsageError(
            f"cannot load BERT weights from --model={ckpt.source} ({cause(e)}). Offline, use a "
            f"local folder or `all-MiniLM-L6-v2`."
        ) from None


class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the hidden states of real (unpadded) tokens."""

    def call(self, sequence, padding_mask):
        mask = keras.ops.cast(padding_mask, sequence.dtype)[:, :, None]
        total = keras.ops.sum(sequence * mask, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


def build_classifier(
    backbone: keras_hub.models.BertBackbone, num_labels: int, pooling: str, dropout: float
) -> keras.Model:
    # === Inputs ===
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUTS}

    # === Encoder and pooling ===
    outputs = backbone(inputs)
    if pooling == "cls":
        pooled = outputs["sequence_output"][:, 0, :]
    elif pooling == "pooler":
        pooled = outputs["pooled_output"]
    else:
        pooled = MaskedMeanPooling(name="mean_pooling")(
            outputs["sequence_output"], inputs["padding_mask"]
        )

    # === Head ===
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    initializer = keras.initializers.TruncatedNormal(stddev=0.02)
    # float32 logits, whatever the compute dtype, so the softmax and loss stay exact.
    logits = keras.layers.Dense(
        num_labels, kernel_initializer=initializer, name="logits", dtype="float32"
    )(pooled)
    return keras.Model(inputs, logits, name="bert_classifier")


def load_best(run_dir: Path, ckpt: Checkpoint, pooling: str, num_labels: int) -> keras.Model:
    """A run's best checkpoint as a float32 classifier with dropout off, for export and
    inference, whatever precision the run trained in."""
    best = run_dir / rundir.BEST_WEIGHTS
    if not best.is_file():
        raise UsageError(
            f"--run_dir={run_dir} has no {rundir.BEST_WEIGHTS} (the run ended before its first "
            f"validation); train it first."
        )
    keras.mixed_precision.set_global_policy("float32")
    classifier = build_classifier(load_backbone(ckpt, 0.0), num_labels, pooling, 0.0)
    classifier.load_weights(str(best))
    return classifier


def weights_sha256(model: keras.Model) -> str:
    """A fingerprint of the model's weights: equal on every worker of a multi-worker run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value)).tobytes())
    return digest.hexdigest()
