"""What families built on keras-hub's `TransformerEncoder` stacks share: the last layer
computed for the first token's row alone (BERT, DistilBERT, RoBERTa, XLM-RoBERTa).

With `cls` or `pooler` pooling nothing but the last layer's first row reaches the head, and that
row needs the other rows only as keys and values. So the last layer projects keys and values for
every token but runs the query, the attention output, both LayerNorms and the feed-forward block
on one row of each text: the same logits, a sixth less encoder work for a 6-layer model.
"""

import keras


class SequenceOutput:
    """For a family whose keras-hub backbone outputs the last hidden states alone (DistilBERT,
    RoBERTa, XLM-RoBERTa: no pooler), built of `TransformerEncoder` layers."""

    def first_token_only(self, backbone, inputs: dict, pooling: str):
        return first_token_only(backbone, inputs)

    def sequence(self, outputs):
        return outputs

    def full_pooled(self, outputs, pooling: str):
        return outputs[:, 0, :]


def first_token_only(backbone, inputs: dict):
    """Every layer but the last as keras-hub wires them; then the last on the first token."""
    last = backbone.transformer_layers[-1]
    trunk = keras.Model(backbone.inputs, last.input[0], name=f"{backbone.name}_trunk")
    return ClsOnlyEncoderLayer(last)(trunk(inputs), inputs["padding_mask"])


@keras.saving.register_keras_serializable("bert_keras")
class ClsOnlyEncoderLayer(keras.layers.Layer):
    """The backbone's last `TransformerEncoder`, computing only the first ([CLS]) row.
    Post-LayerNorm only (the order of these calls is a post-LayerNorm layer's)."""

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
