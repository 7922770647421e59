"""Stage 5: a pretrained keras-hub backbone (of the checkpoint's family) + pooling + dropout +
dense = logits.

>>> backbone = load_backbone(ckpt, dropout=0.1)
>>> model = build_classifier(ckpt.family, backbone, num_labels=6, pooling="cls", dropout=0.1)
>>> model(next(iter(train))[0]).shape
TensorShape([32, 6])
"""

import hashlib
from pathlib import Path

import keras
import numpy as np

from bert_keras.checkpoint import Checkpoint
from bert_keras.families import Family
from bert_keras.task import Task


def load_backbone(ckpt: Checkpoint, dropout: float) -> keras.Model:
    return ckpt.family.load_backbone(ckpt.source, dropout)


class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the hidden states of real (unpadded) tokens."""

    def call(self, sequence, padding_mask):
        mask = keras.ops.cast(padding_mask, sequence.dtype)[:, :, None]
        total = keras.ops.sum(sequence * mask, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


def build_classifier(
    family: Family,
    backbone: keras.Model,
    num_labels: int,
    pooling: str,
    dropout: float,
    first_token_only: bool = True,
) -> keras.Model:
    """With `cls` or `pooler` pooling, the family's last layer computes the first token's row
    alone where it can (`first_token_only=False` wires the whole backbone: the same weights,
    stored under other paths)."""
    # === Inputs ===
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in family.inputs}

    # === Encoder and pooling ===
    pooled = None
    if first_token_only and pooling in ("cls", "pooler"):
        pooled = family.first_token_only(backbone, inputs, pooling)
    if pooled is None and pooling == "mean":
        sequence = family.sequence(backbone(inputs))
        pooled = MaskedMeanPooling(name="mean_pooling")(sequence, inputs["padding_mask"])
    elif pooled is None:
        pooled = family.full_pooled(backbone(inputs), pooling)

    # === Head ===
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    initializer = keras.initializers.TruncatedNormal(stddev=0.02)
    # float32 logits, whatever the compute dtype, so the softmax and loss stay exact.
    logits = keras.layers.Dense(
        num_labels, kernel_initializer=initializer, name="logits", dtype="float32"
    )(pooled)
    return keras.Model(inputs, logits, name="bert_classifier")


def loss_for(task: Task, positive_weights=None) -> keras.losses.Loss:
    """Cross-entropy over a softmax (single-label), over a sigmoid per label (multi-label;
    `positive_weights` per label from --class_weight), or squared error (regression)."""
    if task.regression:
        return keras.losses.MeanSquaredError()
    if task.multi_label and positive_weights is not None:
        return PositiveWeightedBinaryCrossentropy(positive_weights)
    if task.multi_label:
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class PositiveWeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy from logits whose positive terms of label i weigh `weights[i]` (the
    formula of tf.nn.weighted_cross_entropy_with_logits), averaged over labels like Keras'."""

    def __init__(self, weights, name="positive_weighted_binary_crossentropy"):
        super().__init__(name=name)
        self.weights = [float(w) for w in weights]

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        weights = keras.ops.convert_to_tensor(self.weights, y_pred.dtype)
        loss = (1 - y_true) * y_pred + (1 + (weights - 1) * y_true) * keras.ops.softplus(-y_pred)
        return keras.ops.mean(loss, axis=-1)

    def get_config(self):
        return {"weights": self.weights, "name": self.name}


def load_best(
    weights: Path, ckpt: Checkpoint, pooling: str, num_labels: int, with_backbone: bool = False
):
    """A best checkpoint as a float32 classifier with dropout off, whatever precision the run
    trained in (`rundir.RunDir.load_classifier`); `with_backbone`: (classifier, its backbone)."""
    keras.mixed_precision.set_global_policy("float32")
    family, backbone = ckpt.family, load_backbone(ckpt, 0.0)
    classifier = build_classifier(family, backbone, num_labels, pooling, 0.0)
    try:
        classifier.load_weights(str(weights))
    except ValueError:
        if pooling == "mean":
            raise
        # Saved by a bert_keras from before the first-token-only last layer: load it as it was
        # wired (over the same backbone's layers: only the head is the old model's own), then
        # copy each weight by its path (layer names did not change).
        old = build_classifier(family, backbone, num_labels, pooling, 0.0, first_token_only=False)
        old.load_weights(str(weights))
        saved = {w.path: w for w in old.weights}
        for weight in classifier.weights:
            weight.assign(saved[weight.path])
    return (classifier, backbone) if with_backbone else classifier


def weights_sha256(model: keras.Model) -> str:
    """A fingerprint of the model's weights: equal on every worker of a multi-worker run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value)).tobytes())
    return digest.hexdigest()
