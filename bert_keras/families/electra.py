"""ELECTRA (`model_type` "electra"; `google/electra-*-discriminator`): BERT's encoder behind
embeddings of their own width (projected to the hidden width where the two differ), WordPiece
tokenization, segment ids.

keras-hub 0.32 has an `ElectraBackbone` but no converter from a Hugging Face folder, and its
backbone differs from Hugging Face's computation in two places, so the backbone is built here of
keras-hub's layers, as keras-hub's is, with:
- the feed-forward activation the config names (`hidden_act`: ELECTRA's checkpoints say `gelu`,
  the exact GELU; keras-hub's backbone always uses the tanh approximation);
- `pooler` pooling as ELECTRA's own classifier pools (`ElectraClassificationHead`: a dense layer
  and GELU over the first token; keras-hub's backbone has BERT's tanh pooler, which ELECTRA's
  checkpoints do not hold). A `*ForSequenceClassification` checkpoint's `classifier.dense` is
  loaded into it; other layouts start it at random, as transformers does.
"""

import keras
from keras_hub.layers import PositionEmbedding, ReversibleEmbedding, TransformerEncoder

from bert_keras.families import Family, HfHead, convert, register
from bert_keras.families.bert import Bert
from bert_keras.families.convert import Backbone, Weights, activation


class Electra(Bert):
    name = "electra"
    model_types = ("electra",)
    hub_tokenizer = Family.hub_tokenizer  # a keras-hub preset counts as BERT
    hf_head = HfHead(
        "ElectraForSequenceClassification",
        "electra",
        "classifier.dense",
        "gelu",
        "classifier.out_proj",
    )

    def check_config(self, config: dict, source: str, max_seq_length: int):
        activation(config, "hidden_act", source)
        super().check_config(config, source, max_seq_length)

    def load_backbone(self, source: str, dropout: float):
        config, weights = convert.read(source, "electra.")
        backbone = build_backbone(config, dropout, source)
        load_weights(backbone, weights)
        return backbone


def build_backbone(config: dict, dropout: float, source: str) -> Backbone:
    """keras-hub's ElectraBackbone's graph and layer names, with Hugging Face's activation and
    ELECTRA's classifier pooling (above)."""
    hidden, width = config["hidden_size"], config.get("embedding_size", config["hidden_size"])
    initializer = keras.initializers.TruncatedNormal(stddev=config.get("initializer_range", 0.02))
    epsilon = config.get("layer_norm_eps", 1e-12)
    inputs = {
        name: keras.Input(shape=(None,), dtype="int32", name=name)
        for name in ("token_ids", "segment_ids", "padding_mask")
    }
    tokens = ReversibleEmbedding(
        config["vocab_size"], width, embeddings_initializer=initializer, name="token_embedding"
    )(inputs["token_ids"])
    positions = PositionEmbedding(
        sequence_length=config.get("max_position_embeddings", 512),
        initializer=initializer,
        name="position_embedding",
    )(tokens)
    segments = keras.layers.Embedding(
        config.get("type_vocab_size", 2),
        width,
        embeddings_initializer=initializer,
        name="segment_embedding",
    )(inputs["segment_ids"])
    x = keras.layers.Add(name="embeddings_add")((tokens, positions, segments))
    x = keras.layers.LayerNormalization(epsilon=epsilon, name="embeddings_layer_norm")(x)
    x = keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
    if width != hidden:
        x = keras.layers.Dense(
            hidden, kernel_initializer=initializer, name="embeddings_projection"
        )(x)
    layers = [
        TransformerEncoder(
            num_heads=config["num_attention_heads"],
            intermediate_dim=config["intermediate_size"],
            activation=activation(config, "hidden_act", source),
            dropout=dropout,
            layer_norm_epsilon=epsilon,
            kernel_initializer=initializer,
            name=f"transformer_layer_{i}",
        )
        for i in range(config["num_hidden_layers"])
    ]
    for layer in layers:
        x = layer(x, padding_mask=inputs["padding_mask"])
    pooled_dense = keras.layers.Dense(
        hidden, activation="gelu", kernel_initializer=initializer, name="pooled_dense"
    )
    outputs = {"sequence_output": x, "pooled_output": pooled_dense(x[:, 0, :])}
    return Backbone(inputs, outputs, layers, pooled_dense, name="electra_backbone")


def load_weights(backbone: Backbone, w: Weights):
    get = backbone.get_layer
    for layer, name in (
        ("token_embedding", "word_embeddings"),
        ("segment_embedding", "token_type_embeddings"),
    ):
        convert.assign(get(layer).embeddings, w.take(f"embeddings.{name}.weight"))
    positions = w.take("embeddings.position_embeddings.weight")
    convert.assign(get("position_embedding").position_embeddings, positions)
    w.norm(get("embeddings_layer_norm"), "embeddings.LayerNorm")
    if w.has("embeddings_project.weight"):
        w.dense(get("embeddings_projection"), "embeddings_project")
    for i, layer in enumerate(backbone.transformer_layers):
        convert.encoder_layer(layer, w, f"encoder.layer.{i}.")
    if w.has("classifier.dense.weight", base=False):  # a *ForSequenceClassification's head
        w.dense(backbone.pooled_dense, "classifier.dense", base=False)


register(Electra())
