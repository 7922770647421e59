"""DeBERTa-v3 (`model_type` "deberta-v2", which DeBERTa-v3 and mDeBERTa-v3 checkpoints carry):
keras-hub's `DebertaV3Backbone` (disentangled attention over relative positions, no absolute
position embeddings), SentencePiece tokenization, `[CLS] a [SEP] b [SEP]` for pairs, no segment
ids (its token-type table has no rows).

keras-hub has the backbone but no converter from a Hugging Face folder: the weights are mapped
here. Its computation is Hugging Face's for the DeBERTa-v3 configuration only (shared attention
and position keys, both position terms, log buckets, LayerNorm'd relative embeddings, no
convolution, embeddings as wide as the hidden states, epsilon 1e-7), so `check_config` refuses
DeBERTa-v2's other settings. `pooler` pooling is DeBERTa's own classifier's `ContextPooler` (a
dense layer and its activation over the first token), loaded from a
`DebertaV2ForSequenceClassification` checkpoint (`pooler.dense`), else started at random as
transformers does.

The first-token-only last layer is off: each query's scores take position terms from every key
(and every key's from every query), so the first row cannot be cut from the others cheaply.

The Hugging Face tokenizer (transformers 5's `DebertaV2Tokenizer`) does not use the SentencePiece
model's own normaliser: it replaces runs of whitespace and tabs or line breaks with a space,
composes (NFC), strips trailing whitespace, and puts `▁` before each text that does not start
with one. The graph runs those steps as TF ops, and runs SentencePiece on a copy of the model
whose normaliser is rewritten to the identity (and whose byte fallback is the Hugging Face
tokenizer's).
"""

import json
import re

import keras
import keras_hub

from bert_keras.errors import UsageError
from bert_keras.families import Family, HfHead, convert, probe, register
from bert_keras.families import sentencepiece as shared
from bert_keras.families.bert import Bert
from bert_keras.families.convert import Backbone, Weights, activation
from bert_keras.serving.pairs import Specials
from bert_keras.serving.sentencepiece import SentencePieceSpec, SentencePieceTokenizer

# What makes a DeBERTa-v2 configuration a DeBERTa-v3 one: (key, the value, the default).
V3_SETTINGS = (
    ("relative_attention", True, False),
    ("position_biased_input", False, True),
    ("share_att_key", True, False),
    ("conv_kernel_size", 0, 0),
    ("type_vocab_size", 0, 0),
    ("layer_norm_eps", 1e-7, 1e-7),
    ("hidden_act", "gelu", "gelu"),
)
WHITESPACE_RUNS = r"\s{2,}|[\n\r\t]"  # the Hugging Face tokenizer's Replace pattern (Oniguruma)


class DebertaV3(Bert):
    name = "deberta-v2"  # its model_type, as every family's name
    model_types = ("deberta-v2",)
    inputs = ("token_ids", "padding_mask")
    tokenizer_files = ("spm.model",)
    poolings = ("cls", "pooler", "mean")
    hub_tokenizer = Family.hub_tokenizer
    hf_head = HfHead(
        "DebertaV2ForSequenceClassification",
        "deberta",
        "pooler.dense",
        "gelu",
        "classifier",
        activation_key="pooler_hidden_act",
    )

    def check_config(self, config: dict, source: str, max_seq_length: int):
        for key, want, default in V3_SETTINGS:
            if config.get(key, default) != want:
                _not_v3(source, key, config.get(key, default))
        kinds = config.get("pos_att_type") or []
        kinds = kinds.split("|") if isinstance(kinds, str) else kinds
        if set(kinds) != {"p2c", "c2p"}:
            _not_v3(source, "pos_att_type", config.get("pos_att_type"))
        if "layer_norm" not in config.get("norm_rel_ebd", "none"):
            _not_v3(source, "norm_rel_ebd", config.get("norm_rel_ebd"))
        if config.get("position_buckets", -1) <= 0:
            _not_v3(source, "position_buckets", config.get("position_buckets"))
        if config.get("embedding_size", config["hidden_size"]) != config["hidden_size"]:
            _not_v3(source, "embedding_size", config.get("embedding_size"))
        activation(config, "pooler_hidden_act", source)
        super().check_config(config, source, max_seq_length)

    def load_backbone(self, source: str, dropout: float):
        config, weights = convert.read(source, "deberta.")
        hub = hub_backbone(config, dropout)
        load_weights(hub, weights)
        return with_pooler(hub, config, weights, source)

    def tokenizer_spec(self, tokenizer) -> SentencePieceSpec:
        return spec(tokenizer, self.tokenizer_files[0])

    def in_graph_tokenizer(self, spec: SentencePieceSpec, max_seq_length: int):
        return SentencePieceTokenizer(spec, max_seq_length)

    def first_token_only(self, backbone, inputs: dict, pooling: str):
        return None

    def layer_depth(self, path: str, num_layers: int) -> int:
        layer = re.search(r"disentangled_attention_encoder_layer_(\d+)/", path)
        if layer:
            return int(layer.group(1)) + 1
        return 0 if "embedding" in path else num_layers + 1


def _not_v3(source: str, key: str, value):
    raise UsageError(
        f"--model={source}: its config.json has {key}={value!r}, which DeBERTa-v3 does not; "
        f"bert_keras builds DeBERTa-v3 and mDeBERTa-v3 (model_type deberta-v2), not DeBERTa-v2."
    )


def hub_backbone(config: dict, dropout: float) -> keras.Model:
    limit = config.get("max_relative_positions", -1)
    return keras_hub.models.DebertaV3Backbone(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        dropout=dropout,
        max_sequence_length=limit if limit > 0 else config.get("max_position_embeddings", 512),
        bucket_size=config["position_buckets"],
    )


def load_weights(hub: keras.Model, w: Weights):
    convert.assign(hub.token_embedding.embeddings, w.take("embeddings.word_embeddings.weight"))
    w.norm(hub.embeddings_layer_norm, "embeddings.LayerNorm")
    relative = hub.relative_embeddings
    convert.assign(relative.rel_embeddings, w.take("encoder.rel_embeddings.weight"))
    w.norm(hub.relative_embeddings.layer_norm, "encoder.LayerNorm")
    for i, layer in enumerate(hub.transformer_layers):
        convert.encoder_layer(layer, w, f"encoder.layer.{i}.", projection="_proj")


def with_pooler(hub: keras.Model, config: dict, w: Weights, source: str) -> Backbone:
    """keras-hub's backbone with DeBERTa's ContextPooler as `pooled_dense`: a
    `*ForSequenceClassification` checkpoint's `pooler.dense`, else at random."""
    hidden = config["hidden_size"]
    pooled_dense = keras.layers.Dense(
        config.get("pooler_hidden_size", hidden),
        activation=activation(config, "pooler_hidden_act", source),
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=config.get("initializer_range", 0.02)
        ),
        name="pooled_dense",
    )
    sequence = hub.output
    outputs = {"sequence_output": sequence, "pooled_output": pooled_dense(sequence[:, 0, :])}
    backbone = Backbone(hub.inputs, outputs, hub.transformer_layers, pooled_dense, hub.name)
    if w.has("pooler.dense.weight", base=False):
        w.dense(pooled_dense, "pooler.dense", base=False)
    return backbone


# === The tokenizer ===


def spec(tokenizer, model_file_name: str) -> SentencePieceSpec:
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    name = tokenizer.name_or_path
    steps = [_step(step, name) for step in _normalizers(backend)]
    pre = backend.get("pre_tokenizer") or {}
    pre = pre.get("pretokenizers", [pre])
    if len(pre) != 1 or pre[0].get("type") != "Metaspace" or not pre[0].get("split", True):
        shared._refuse(
            name, f"its pre-tokenizer is {[p.get('type') for p in pre]}, not a Metaspace"
        )
    if pre[0].get("prepend_scheme", "always") != "always":
        shared._refuse(name, "its Metaspace does not prepend to every text")
    model = backend["model"]
    if model["type"] != "Unigram":
        shared._refuse(name, f"its model is {model['type']}, not a Unigram")
    model_file = shared.model_file(tokenizer, model_file_name)
    return SentencePieceSpec(
        model=_identity_normaliser(model_file.read_bytes(), model),
        vocab=shared.vocabulary(tokenizer),
        steps=steps,
        whitespace="",
        unk_id=tokenizer.unk_token_id,
        specials=Specials(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id),
        charsmap=False,
        leading_space=True,
    )


def _normalizers(backend: dict) -> list[dict]:
    normalizer = backend.get("normalizer") or {}
    return normalizer.get("normalizers", [normalizer] if normalizer else [])


def _step(step: dict, name: str) -> dict:
    """A normaliser step the graph runs, with the character classes it needs."""
    kind = step["type"]
    if kind == "Replace" and step["pattern"].get("Regex") == WHITESPACE_RUNS:
        runs = probe.char_class(_regex_whitespace())
        return {**step, "re2": f"{runs}{{2,}}|[\\n\\r\\t]"}
    if kind == "Strip":
        return {**step, "chars": probe.char_class(_stripped())}
    if kind == "Replace" and "String" not in step["pattern"]:
        shared._refuse(name, f"its normaliser replaces the regex {step['pattern'].get('Regex')}")
    if kind not in ("Replace", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Lowercase"):
        shared._refuse(name, f"its normaliser has a {kind} step")
    return shared._with_tables(step)


def _stripped() -> set[str]:
    """What the Hugging Face `Strip` strips, probed one call per candidate (it acts on the ends
    of a text only): every separator, control and format character (Rust's whitespace is
    Unicode's White_Space, all of them separators or controls)."""
    import unicodedata

    from tokenizers import normalizers

    strip = normalizers.Strip(left=False, right=True)
    kinds = ("Zs", "Zl", "Zp", "Cc", "Cf")
    candidates = (chr(c) for c in probe.CODE_POINTS)
    candidates = [c for c in candidates if unicodedata.category(c) in kinds or c.isspace()]
    return {c for c in candidates if strip.normalize_str("a" + c) == "a"}


def _regex_whitespace() -> set[str]:
    """What the Oniguruma `\\s` of the Hugging Face pattern matches: a character whose pair
    becomes one space."""
    from tokenizers import Regex, normalizers

    replace = normalizers.Replace(Regex(r"\s{2,}"), " ")
    chars = [chr(c) for c in probe.CODE_POINTS if chr(c) != probe.SEPARATOR]
    outputs = replace.normalize_str(probe.SEPARATOR.join(c + c for c in chars))
    return {c for c, out in zip(chars, outputs.split(probe.SEPARATOR), strict=True) if out == " "}


def _identity_normaliser(model: bytes, unigram: dict) -> bytes:
    """The SentencePiece model with its normaliser rewritten to the identity (the steps above
    normalise instead), keeping spaces as they are. Where the Hugging Face Unigram does not fall
    back to bytes, neither does the graph: its byte pieces (`<0x41>`) become the ordinary
    pieces they are in the Hugging Face vocabulary."""
    # The proto module transformers itself reads spm.model with: a second module of the same
    # proto would break transformers' next read of a spm.model in this process.
    from transformers.convert_slow_tokenizer import import_protobuf

    parsed = import_protobuf().ModelProto()
    parsed.ParseFromString(model)
    spec = parsed.normalizer_spec
    spec.name, spec.precompiled_charsmap = "identity", b""
    spec.add_dummy_prefix, spec.remove_extra_whitespaces, spec.escape_whitespaces = (
        True,
        False,
        True,
    )
    byte_fallback = bool(unigram.get("byte_fallback"))
    parsed.trainer_spec.byte_fallback = byte_fallback
    if not byte_fallback:
        for piece in parsed.pieces:
            if piece.type == piece.BYTE:
                piece.type = piece.NORMAL
    return parsed.SerializeToString()


register(DebertaV3())
