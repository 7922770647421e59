"""BERT (`model_type` "bert"): keras-hub's `BertBackbone`, WordPiece tokenization, segment ids.

>>> from bert_keras.families import for_config
>>> family = for_config({"model_type": "bert"})
>>> backbone = family.load_backbone("/path/to/hf_bert_folder", dropout=0.1)
"""

import keras
import keras_hub

from bert_keras.errors import UsageError, cause
from bert_keras.families import Family, register
from bert_keras.serving.wordpiece import Vocab, WordPieceTokenizer

OFFLINE_HINT = "Offline, use a local folder or `all-MiniLM-L6-v2`."


class Bert(Family):
    name = "bert"
    model_types = ("bert",)
    inputs = ("token_ids", "segment_ids", "padding_mask")
    tokenizer_files = ("vocab.txt",)

    def check_config(self, config: dict, source: str, max_seq_length: int):
        limit = config.get("max_position_embeddings", 512)
        if max_seq_length > limit:
            raise UsageError(
                f"--max_seq_length={max_seq_length} is above the model's position limit "
                f"{limit}; use --max_seq_length={limit} or less."
            )

    def load_backbone(self, source: str, dropout: float):
        """keras-hub converts a Hugging Face folder (or `hf://` id) itself, offline for
        folders."""
        try:
            return keras_hub.models.BertBackbone.from_preset(source, dropout=dropout)
        except Exception as e:  # offline, unknown preset, missing tensors: all end the same way
            raise UsageError(
                f"cannot load BERT weights from --model={source} ({cause(e)}). {OFFLINE_HINT}"
            ) from None

    def hub_tokenizer(self, source: str):
        import transformers

        hub = keras_hub.models.BertTokenizer.from_preset(source)
        return transformers.BertTokenizerFast(
            vocab={t: i for i, t in enumerate(hub.get_vocabulary())}, do_lower_case=hub.lowercase
        )

    def tokenizer_spec(self, tokenizer) -> Vocab:
        by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        tokens = [t for t, _ in by_id]
        if [i for _, i in by_id] != list(range(len(tokens))):
            raise UsageError(
                "the tokenizer's vocab ids are not 0..n-1; bert_keras needs a BERT vocab."
            )
        normalizer = tokenizer.backend_tokenizer.normalizer
        lowercase = bool(getattr(normalizer, "lowercase", False))
        strip_accents = getattr(normalizer, "strip_accents", None)
        if strip_accents is not None and strip_accents != lowercase:
            raise UsageError(
                "the tokenizer strips accents without lowercasing (or the reverse), which the "
                "in-graph tokenizer cannot reproduce; use a standard cased or uncased BERT vocab."
            )
        return Vocab(
            tokens=tokens,
            lowercase=lowercase,
            unk_token=tokenizer.unk_token,
            cls_id=tokenizer.cls_token_id,
            sep_id=tokenizer.sep_token_id,
            pad_id=tokenizer.pad_token_id,
        )

    def in_graph_tokenizer(self, spec: Vocab, max_seq_length: int) -> WordPieceTokenizer:
        return WordPieceTokenizer(spec, max_seq_length)

    def first_token_only(self, backbone, inputs: dict, pooling: str):
        """Every layer but the last as keras-hub wires them; then the last on [CLS] alone."""
        last = backbone.transformer_layers[-1]
        trunk = keras.Model(backbone.inputs, last.input[0], name="bert_backbone_trunk")
        cls = ClsOnlyEncoderLayer(last)(trunk(inputs), inputs["padding_mask"])
        return cls if pooling == "cls" else backbone.pooled_dense(cls)

    def full_pooled(self, outputs: dict, pooling: str):
        return outputs["sequence_output"][:, 0, :] if pooling == "cls" else outputs["pooled_output"]


@keras.saving.register_keras_serializable("bert_keras")
class ClsOnlyEncoderLayer(keras.layers.Layer):
    """The backbone's last `TransformerEncoder`, computing only the [CLS] row.

    With `cls` or `pooler` pooling nothing but the last layer's [CLS] row reaches the head, and
    that row needs the other rows only as keys and values. So the last layer projects keys and
    values for every token but runs the query, the attention output, both LayerNorms and the
    feed-forward block on one row of each text: the same logits, a sixth less encoder work for a
    6-layer model. Post-LayerNorm (BERT) only: a pre-LayerNorm layer would need another order.
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


register(Bert())
