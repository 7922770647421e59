"""SentencePiece in the graph (XLM-RoBERTa, ALBERT, DeBERTa-v3): raw text -> the Hugging Face
tokenizer's ids.

The Hugging Face fast tokenizer of a SentencePiece checkpoint is the SentencePiece model's
Unigram lattice behind a normaliser: a few plain steps (`Replace`, Unicode normal forms,
`StripAccents`, `Lowercase`, `Strip`), then (XLM-RoBERTa, ALBERT) the model's own precompiled
character map. Here the plain steps run as TensorFlow ops, then TF Text's SentencepieceTokenizer
(which applies the character map, if the model proto still has one, and SentencePiece's
whitespace rules) gives pieces, and the Hugging Face vocabulary maps each piece to its id (an id
offset such as XLM-R's comes with it).

>>> tokenizer = SentencePieceTokenizer(spec, max_seq_length=128)
>>> tokenizer(tf.constant(["i feel great"]))["token_ids"]
"""

import dataclasses
import hashlib

import tensorflow as tf
import tensorflow_text as tf_text

from bert_keras.serving.characters import CodePointMap, literal, replace
from bert_keras.serving.pairs import InGraphTokenizer, Specials

PRIVATE_USE = "\ue000"
# The normaliser steps the graph reproduces, by their Hugging Face `type`.
STEPS = ("Replace", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Lowercase", "Strip")


@dataclasses.dataclass
class SentencePieceSpec:
    model: bytes  # the SentencePiece model proto (spiece.model, sentencepiece.bpe.model)
    vocab: list[str]  # the Hugging Face vocabulary: index = id
    steps: list[dict]  # normaliser steps before the character map, as in tokenizer.json, with
    # what StripAccents strips (`marks`, a class), Lowercase's `table`, a regex Replace's RE2
    # pattern (`re2`) and what Strip strips (`chars`, a class)
    whitespace: str  # a class of what the pre-tokenizer also splits at, made spaces
    unk_id: int
    specials: Specials
    charsmap: bool = True  # the model proto applies its character map (False: rewritten off)
    # The Metaspace prepends its `▁` only to a text that does not start with one, where
    # SentencePiece always adds its own: a leading space is dropped first.
    leading_space: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model + "\n".join(self.vocab).encode()).hexdigest()


class SentencePieceTokenizer(InGraphTokenizer):
    kind = "sentencepiece"

    def __init__(self, spec: SentencePieceSpec, max_seq_length: int):
        super().__init__(spec.specials, max_seq_length)
        self.spec = spec
        self.normalisers = [_normaliser(step) for step in spec.steps]
        self.pieces = tf_text.SentencepieceTokenizer(model=spec.model, out_type=tf.string)
        self.ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(spec.vocab), tf.range(len(spec.vocab), dtype=tf.int32)
            ),
            default_value=spec.unk_id,
        )

    def _ids(self, text) -> tf.RaggedTensor:
        # SentencePiece's C++ reads a NUL as the end of the text; Hugging
        # Face keeps it as an unknown character. A private-use character is unknown alike.
        text = tf.strings.regex_replace(text, r"\x00", PRIVATE_USE)
        for normalise in self.normalisers:
            text = normalise(text)
        text = replace(text, self.spec.whitespace, " ")
        if self.spec.leading_space:
            text = tf.strings.regex_replace(text, "^ ", "")
        return tf.ragged.map_flat_values(self.ids.lookup, self.pieces.tokenize(text))

    def assets(self) -> dict[str, bytes | str]:
        return {"sentencepiece.model": self.spec.model, "vocab.txt": "\n".join(self.spec.vocab)}

    def describe(self) -> dict:
        return {
            "tokenizer": self.kind,
            "vocab_size": len(self.spec.vocab),
            "vocab_sha256": self.spec.sha256,
            "normalizer": [step["type"] for step in self.spec.steps]
            + ["Precompiled"] * self.spec.charsmap,
            "lowercase": any(step["type"] == "Lowercase" for step in self.spec.steps),
        }


def _normaliser(step: dict):
    """A step as a function of the text (a CodePointMap, a tf.Module, for Lowercase)."""
    kind = step["type"]
    if kind in ("Replace", "Strip"):
        pattern, rewrite = regex_of(step)
        return lambda text: replace(text, pattern, rewrite)
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda text: tf_text.normalize_utf8(text, kind)
    if kind == "StripAccents":
        return lambda text: replace(text, step["marks"], "")
    if kind == "Lowercase":
        return CodePointMap(step["table"])
    raise ValueError(f"normaliser step {kind} is not one of {STEPS}")


def regex_of(step: dict) -> tuple[str, str]:
    """A `Replace` or `Strip` step as an RE2 (pattern, rewrite); pattern "": nothing to do.
    (The ONNX graph runs the same.)"""
    if step["type"] == "Replace":
        pattern = step.get("re2") or literal(step["pattern"]["String"])
        return pattern, step["content"].replace("\\", "\\\\")
    if step["type"] != "Strip":
        raise ValueError(f"normaliser step {step['type']} is not a regular expression")
    chars = step["chars"]
    left, right = f"^{chars}+" * step["strip_left"], f"{chars}+$" * step["strip_right"]
    return ("|".join(p for p in (left, right) if p) if chars else ""), ""
