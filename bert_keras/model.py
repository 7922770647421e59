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


@keras.saving.register_keras_serializable("bert_keras")
class ClsOnlyEncoderLayer(keras.layers.Layer):
    """The backbone's last `TransformerEncoder`, computing only the [CLS] row.

    With `cls` or `pooler` pooling nothing but the last layer's [CLS] row reaches the head, and
    that row needs the other rows only as keys and values. So the last layer projects keys and
    values for every token but runs the query, the attention output, both LayerNorms and the
    feed-forward block on one row of each text instead of ~23: the same logits, a sixth less
    encoder work for a 6-layer model (python -m bert_keras.bench). Post-LayerNorm (BERT) only.
    """

    def __init__(self, encoder, **kwargs):
        super().__init__(name=f"{encoder.name}_cls_only", **kwargs)
        if encoder.normalize_first:
            raise ValueError("ClsOnlyEncoderLayer supports post-LayerNorm encoders (BERT) only")
        self.encoder = encoder

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["encoder"]))

    def call(self, sequence, padding_mask, training=None):
        e = self.encoder
        cls = sequence[:, :1, :]
        # [batch, 1, length]: the [CLS] query may attend to every real token.
        mask = keras.ops.cast(padding_mask, "int32")[:, None, :]
        x = e._self_attention_layer(
            query=cls, value=sequence, attention_mask=mask, training=training
        )
        x = e._self_attention_dropout(x, training=training)
        x = e._self_attention_layer_norm(x + cls)
        residual = x
        x = e._feedforward_output_dense(e._feedforward_intermediate_dense(x))
        x = e._feedforward_dropout(x, training=training)
        x = e._feedforward_layer_norm(x + residual)
        return x[:, 0, :]


def build_classifier(
    backbone: keras_hub.models.BertBackbone,
    num_labels: int,
    pooling: str,
    dropout: float,
    cls_only: bool = True,
) -> keras.Model:
    """`cls_only=False` wires the whole backbone, as bert_keras did before the [CLS]-only last
    layer (the same weights, stored under other paths)."""
    # === Inputs ===
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUTS}

    # === Encoder and pooling ===
    if cls_only and pooling in ("cls", "pooler"):
        # Every layer but the last as keras-hub wires them; then the last on [CLS] alone.
        last = backbone.transformer_layers[-1]
        trunk = keras.Model(backbone.inputs, last.input[0], name="bert_backbone_trunk")
        cls = ClsOnlyEncoderLayer(last)(trunk(inputs), inputs["padding_mask"])
        pooled = cls if pooling == "cls" else backbone.pooled_dense(cls)
    else:
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
    backbone = load_backbone(ckpt, 0.0)
    classifier = build_classifier(backbone, num_labels, pooling, 0.0)
    try:
        classifier.load_weights(str(best))
    except ValueError:
        if pooling == "mean":
            raise
        # Saved by a bert_keras from before the [CLS]-only last layer: load it as it was wired
        # (over the same backbone's layers: only the head is the old model's own), then copy
        # each weight by its path (layer names did not change).
        old = build_classifier(backbone, num_labels, pooling, 0.0, cls_only=False)
        old.load_weights(str(best))
        saved = {w.path: w for w in old.weights}
        for weight in classifier.weights:
            weight.assign(saved[weight.path])
    return classifier


def weights_sha256(model: keras.Model) -> str:
    """A fingerprint of the model's weights: equal on every worker of a multi-worker run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value)).tobytes())
    return digest.hexdigest()
