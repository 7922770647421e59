"""The encoder as an export runs it: each layer's attention heads and feed-forward columns in two
independent halves, which TensorFlow's inter-op threads run side by side.

A short text's matrices are too small for one op to gain from two threads (docs/serving.md:
TensorFlow's own split of each op over the cores was slower), so a request would run on one core.
Heads are independent until the attention's output projection, and the feed-forward block's
intermediate columns until its second projection: each half computes its share and the halves'
projections are summed. The function is keras-hub's `TransformerEncoder`'s (float summation order
aside); the weights are the layer's, cut and laid out once, when the export is made.
"""

import keras
import numpy as np
import tensorflow as tf
from keras_hub.layers import TransformerEncoder

from bert_keras.families.transformer import ClsOnlyEncoderLayer

BRANCHES = 2
# A layer's weights live in one flat variable, each starting on a 64-byte boundary (16 float32):
# TensorFlow's split hands out such pieces without copying them. Fewer variables, fewer ops per
# request: a variable costs a handle, a read and, inside the one-chunk test's branches, a switch
# (docs/performance.md).
ALIGNMENT = 16


def branched(classifier: keras.Model) -> keras.Model:
    """The classifier with each `TransformerEncoder` (and first-token-only last layer) computed
    by a `BranchedEncoder`; every other layer is the classifier's own."""
    made = {}

    def call(layer, *args, **kwargs):
        if not isinstance(layer, (TransformerEncoder, ClsOnlyEncoderLayer)):
            return layer(*args, **kwargs)
        if id(layer) not in made:  # ALBERT calls one layer for several depths
            made[id(layer)] = BranchedEncoder(layer)
        return made[id(layer)](*args, **kwargs)

    # The same graph, uncompiled: clone_model would rebuild a compiled model's optimizer.
    graph = keras.Model(classifier.input, classifier.output, name=classifier.name)
    return keras.models.clone_model(
        graph, clone_function=lambda layer: layer, call_function=call, recursive=True
    )


class BranchedEncoder(keras.layers.Layer):
    """A `TransformerEncoder` (or `ClsOnlyEncoderLayer`) at inference, in `BRANCHES` halves."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}_branched", **kwargs)
        self.cls_only = isinstance(layer, ClsOnlyEncoderLayer)
        encoder = layer.encoder if self.cls_only else layer
        attention = encoder._self_attention_layer
        heads, self.head_width = attention._num_heads, attention._key_dim
        columns = encoder._feedforward_intermediate_dense.kernel.shape[1]
        branches = BRANCHES if heads % BRANCHES == 0 and columns % BRANCHES == 0 else 1
        self.heads = heads // branches
        self.normalize_first = encoder.normalize_first
        self.activation = encoder._feedforward_intermediate_dense.activation
        self.epsilon = encoder._self_attention_layer_norm.epsilon
        weights = _halves(encoder, branches, self.cls_only)
        halves = weights.pop("branches")
        self.branches, self.half_names = len(halves), list(halves[0])
        self.shared_names = list(weights)
        arrays = [half[n] for half in halves for n in self.half_names] + [*weights.values()]
        self.shapes = [array.shape for array in arrays]
        packed, self.sizes = _pack(arrays)
        self.packed = self.add_weight(name="packed", shape=packed.shape, trainable=False)
        self.packed.assign(packed)

    def _unpack(self):
        """The layer's weights out of `packed`: each half's, and those the halves share."""
        pieces = tf.split(self.packed, self.sizes)[::2]  # without the paddings
        values = iter(
            p if len(shape) == 1 else tf.reshape(p, shape)
            for p, shape in zip(pieces, self.shapes, strict=True)
        )
        halves = [{name: next(values) for name in self.half_names} for _ in range(self.branches)]
        return halves, {name: next(values) for name in self.shared_names}

    def call(self, x, padding_mask=None):
        shape = tf.shape(x)
        batch, length, width = shape[0], shape[1], x.shape[-1]
        # Added to the scores of padded keys (Keras masks them out: the same zero weights).
        if padding_mask is None:
            padding_mask = tf.ones([batch, length], tf.int32)
        masked = (1.0 - tf.cast(padding_mask, x.dtype))[:, None, None, :] * -1e9
        rows = x[:, :1] if self.cls_only else x
        per_half, w = self._unpack()  # each half's weights, and the shared

        h = self._norm(x, w, "attention_norm") if self.normalize_first else x
        flat = tf.reshape(h, [-1, width])
        queries = tf.reshape(rows, [-1, width]) if self.cls_only else None
        halves = [self._attention(flat, queries, b, masked, batch) for b in per_half]
        x = tf.reshape(tf.add_n(halves), [batch, -1, width]) + w["output_bias"] + rows
        if not self.normalize_first:
            x = self._norm(x, w, "attention_norm")

        h = self._norm(x, w, "feedforward_norm") if self.normalize_first else x
        flat = tf.reshape(h, [-1, width])
        halves = [
            tf.matmul(
                self.activation(tf.nn.bias_add(tf.matmul(flat, b["in"]), b["in_bias"])), b["out"]
            )
            for b in per_half
        ]
        x = tf.reshape(tf.add_n(halves), [batch, -1, width]) + w["feedforward_bias"] + x
        if not self.normalize_first:
            x = self._norm(x, w, "feedforward_norm")
        return x[:, 0] if self.cls_only else x

    def _attention(self, flat, queries, b, masked, batch):
        """One half's heads: [batch x tokens, width] -> its share of the output projection."""
        if queries is None:  # queries, keys and values in one matmul and one transpose
            q, k, v = tf.split(self._heads(flat, b["qkv"], b["qkv_bias"], batch), 3, axis=1)
        else:
            q = self._heads(queries, b["q"], b["q_bias"], batch)
            k, v = tf.split(self._heads(flat, b["kv"], b["kv_bias"], batch), 2, axis=1)
        scores = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) + masked)
        context = tf.transpose(tf.matmul(scores, v), [0, 2, 1, 3])
        return tf.matmul(tf.reshape(context, [-1, self.heads * self.head_width]), b["o"])

    def _heads(self, flat, kernel, bias, batch):
        """A projection as [batch, heads, tokens, head width]."""
        projected = tf.nn.bias_add(tf.matmul(flat, kernel), bias)
        return tf.transpose(
            tf.reshape(projected, [batch, -1, kernel.shape[1] // self.head_width, self.head_width]),
            [0, 2, 1, 3],
        )

    def _norm(self, x, w, name):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        gamma, beta = w[f"{name}_gamma"], w[f"{name}_beta"]
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)


def _pack(arrays) -> tuple[np.ndarray, list[int]]:
    """The arrays end to end in one flat float32 array, each padded to start on a 64-byte
    boundary; and the sizes that split it back (array, padding, array, padding, ...)."""
    pieces, sizes = [], []
    for array in arrays:
        padding = -array.size % ALIGNMENT
        pieces += [array.reshape(-1), np.zeros(padding, np.float32)]
        sizes += [array.size, padding]
    return np.concatenate(pieces).astype(np.float32), sizes


def _halves(encoder, branches: int, cls_only: bool) -> dict:
    """The layer's weights as numpy arrays, each half's heads and columns side by side; the
    queries' 1/sqrt(head width) folded into their projection, as Keras scales queries."""
    attention = encoder._self_attention_layer
    heads = attention._num_heads
    per = heads // branches
    scale = np.float32(1.0 / np.sqrt(attention._key_dim))

    def projection(dense, head_slice, factor=1.0):
        kernel = dense.kernel.numpy()[:, head_slice] * factor  # [width, heads, head width]
        bias = dense.bias.numpy()[head_slice] * factor
        return kernel.reshape(kernel.shape[0], -1), bias.reshape(-1)

    intermediate = encoder._feedforward_intermediate_dense
    into, into_bias = intermediate.kernel.numpy(), intermediate.bias.numpy()
    out_of = encoder._feedforward_output_dense.kernel.numpy()
    columns = into.shape[1] // branches
    output = attention._output_dense.kernel.numpy()  # [heads, head width, width]
    halves = []
    for i in range(branches):
        heads_i, columns_i = slice(i * per, (i + 1) * per), slice(i * columns, (i + 1) * columns)
        q = projection(attention._query_dense, heads_i, scale)
        k = projection(attention._key_dense, heads_i)
        v = projection(attention._value_dense, heads_i)
        half = {
            "o": output[heads_i].reshape(-1, output.shape[-1]),
            "in": into[:, columns_i],
            "in_bias": into_bias[columns_i],
            "out": out_of[columns_i],
        }
        if cls_only:
            half.update(q=q[0], q_bias=q[1])
            half.update(kv=np.concatenate([k[0], v[0]], 1), kv_bias=np.concatenate([k[1], v[1]]))
        else:
            half["qkv"] = np.concatenate([q[0], k[0], v[0]], 1)
            half["qkv_bias"] = np.concatenate([q[1], k[1], v[1]])
        halves.append(half)
    return {
        "branches": halves,
        "output_bias": attention._output_dense.bias.numpy(),
        "feedforward_bias": encoder._feedforward_output_dense.bias.numpy(),
        "attention_norm_gamma": encoder._self_attention_layer_norm.gamma.numpy(),
        "attention_norm_beta": encoder._self_attention_layer_norm.beta.numpy(),
        "feedforward_norm_gamma": encoder._feedforward_layer_norm.gamma.numpy(),
        "feedforward_norm_beta": encoder._feedforward_layer_norm.beta.numpy(),
    }
