"""Hugging Face tensors into keras-hub layers, for the families whose Hugging Face folders
keras-hub 0.32 has no converter for (ELECTRA, DeBERTa-v3). A PyTorch `Linear` stores its weight
as [out, in]; Keras' `Dense` kernel is [in, out], and attention's `EinsumDense` projections split
`out` into [heads, head width]."""

import json
from pathlib import Path

import keras
import numpy as np

from bert_keras import tensors
from bert_keras.errors import UsageError


def read(source: str, prefix: str) -> tuple[dict, "Weights"]:
    """A Hugging Face folder's config.json and tensors (`checkpoint` has made a hub id one)."""
    folder = Path(source)
    if not folder.is_dir():
        raise UsageError(f"--model={source}: this family loads from a folder or a hub id.")
    config = json.loads((folder / "config.json").read_text())
    return config, Weights(folder, prefix, "embeddings.word_embeddings.weight")


class Weights:
    """A checkpoint's tensors under the base model's prefix (`electra.`, `deberta.`: what the
    `*ForPreTraining`, `*ForMaskedLM` and `*ForSequenceClassification` layouts share; a bare
    model's have none). A tensor missing, or of another shape than the layer's, is a one-line
    error rather than a silently random weight; the pre-training heads' tensors are left."""

    def __init__(self, folder: Path, prefix: str, probe: str):
        self.folder = folder
        self.arrays = tensors.read(folder)
        self.prefix = prefix if f"{prefix}{probe}" in self.arrays else ""
        if f"{self.prefix}{probe}" not in self.arrays:
            raise UsageError(
                f"--model={folder}: its weights hold no {prefix}{probe}; is it a checkpoint of "
                f"this model_type, saved with save_pretrained?"
            )

    def has(self, name: str, base: bool = True) -> bool:
        return f"{self.prefix if base else ''}{name}" in self.arrays

    def take(self, name: str, base: bool = True) -> np.ndarray:
        key = f"{self.prefix if base else ''}{name}"
        if key not in self.arrays:
            raise UsageError(f"--model={self.folder}: its weights have no tensor {key}.")
        return self.arrays[key]

    def dense(self, layer, name: str, base: bool = True):
        """A `Linear` into a `Dense`, or into an `EinsumDense` of any kernel shape [in, ...]."""
        weight, bias = self.take(f"{name}.weight", base), self.take(f"{name}.bias", base)
        assign(layer.kernel, weight.T.reshape(layer.kernel.shape))
        assign(layer.bias, bias.reshape(layer.bias.shape))

    def attention_output(self, layer, name: str):
        """A `Linear` into attention's output `EinsumDense`, kernel [heads, head width, out]
        or [in, out]."""
        weight = self.take(f"{name}.weight")
        assign(layer.kernel, weight.T.reshape(layer.kernel.shape))
        assign(layer.bias, self.take(f"{name}.bias"))

    def norm(self, layer, name: str):
        assign(layer.gamma, self.take(f"{name}.weight"))
        assign(layer.beta, self.take(f"{name}.bias"))


class Backbone(keras.Model):
    """A functional backbone with what the rest of bert_keras reads of keras-hub's: its
    `transformer_layers` and their number, and the `pooled_dense` that `pooler` pooling runs."""

    def __init__(self, inputs, outputs, transformer_layers, pooled_dense, name: str):
        super().__init__(inputs=inputs, outputs=outputs, name=name)
        self.transformer_layers, self.pooled_dense = transformer_layers, pooled_dense
        self.num_layers = len(transformer_layers)


def assign(variable, value: np.ndarray):
    if tuple(variable.shape) != value.shape:
        raise UsageError(
            f"a tensor of shape {value.shape} does not fit {variable.path} {tuple(variable.shape)}:"
            f" the weights do not match config.json."
        )
    variable.assign(value)


def activation(config: dict, key: str, source: str):
    """A Hugging Face activation (`hidden_act`) as Keras': `gelu` is the exact (erf) GELU,
    `gelu_new` and `gelu_pytorch_tanh` the tanh approximation."""
    from keras_hub.src.utils.keras_utils import gelu_approximate

    name = config.get(key, "gelu")
    approximate = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}
    if name not in approximate:
        raise UsageError(
            f"--model={source}: its {key} is {name!r}; bert_keras builds gelu, gelu_new and "
            f"gelu_pytorch_tanh. Pick a checkpoint with one of them."
        )
    return gelu_approximate if approximate[name] else "gelu"


def encoder_layer(layer, w: Weights, p: str, projection: str = ""):
    """BERT's layer tensor names (`attention.self.query`, ...; DeBERTa's `query_proj`: the
    `projection` suffix `_proj`) into a keras-hub encoder layer (`TransformerEncoder`,
    `DisentangledAttentionEncoder`: the same sublayer names)."""
    attention = layer._self_attention_layer
    for role in ("query", "key", "value"):
        w.dense(getattr(attention, f"_{role}_dense"), f"{p}attention.self.{role}{projection}")
    w.attention_output(attention._output_dense, f"{p}attention.output.dense")
    w.norm(layer._self_attention_layer_norm, f"{p}attention.output.LayerNorm")
    w.dense(layer._feedforward_intermediate_dense, f"{p}intermediate.dense")
    w.dense(layer._feedforward_output_dense, f"{p}output.dense")
    w.norm(layer._feedforward_layer_norm, f"{p}output.LayerNorm")
