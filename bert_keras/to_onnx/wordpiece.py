"""WordPiece in ONNX (BERT, DistilBERT, ELECTRA): raw text -> the Hugging Face tokenizer's ids,
of onnxruntime-extensions' string operators.

The Hugging Face normaliser is one character at a time, so its whole effect is a table read from
the `tokenizers` library itself (`families.probe.changed`): characters it deletes and those it
makes spaces are two RE2 replaces; every other change (lowercase, accents stripped, spaces
around Chinese characters) is `StringMapping` on the text's characters, joined again. Then the
pre-tokenizer's split (whitespace dropped, each punctuation character a word: one RE2 split),
`WordpieceTokenizer` on each word, and `LabelEncoder` from pieces to ids.
"""

import json

import numpy as np
from onnx import TensorProto, helper

from bert_keras.families import probe
from bert_keras.serving.wordpiece import Vocab
from bert_keras.to_onnx.graph import (
    CONTRIB,
    ML,
    Graph,
    gather_ragged,
    ragged_to_dense,
    starts_lengths,
)


def normaliser_table(tokenizer) -> dict[str, str]:
    """Each character the tokenizer's normaliser changes, and what it makes of it."""
    return probe.changed(tokenizer.backend_tokenizer.normalizer)


def ids(g: Graph, text: str, vocab: Vocab, table: dict[str, str]):
    """One text tensor's ids, without special tokens: (flat int64 ids, row splits)."""
    deleted = probe.char_class(c for c, out in table.items() if out == "")
    spaced = probe.char_class(c for c, out in table.items() if out == " ")
    mapped = {c: out for c, out in table.items() if out not in ("", " ")}
    if "\x00" in table and table["\x00"] == "":
        text = _without_nul(g, text)
    if deleted:
        text = g.op("StringRegexReplace", text, g.const([deleted]), g.const([""]), domain=CONTRIB)
    if spaced:
        text = g.op("StringRegexReplace", text, g.const([spaced]), g.const([" "]), domain=CONTRIB)
    if mapped:
        text = _map_characters(g, text, mapped)
    rules = vocab.rules
    split = "|".join(c for c in (rules.whitespace, rules.punctuation) if c)
    words, _, _, word_splits = g.op(
        "StringRegexSplitWithOffsets",
        text,
        g.const([f"({split})"]),
        g.const([rules.punctuation]),
        outputs=4,
        domain=CONTRIB,
    )
    pieces, piece_splits, _, _ = g.op(
        "WordpieceTokenizer",
        words,
        g.const(np.zeros([0], np.int64)),
        outputs=4,
        domain=CONTRIB,
        vocab=json.dumps({t: i for i, t in enumerate(vocab.tokens)}),
        suffix_indicator=vocab.suffix_indicator,
        unknown_token=vocab.unk_token,
        max_input_chars_per_word=vocab.max_chars_per_word,
    )
    unk = vocab.tokens.index(vocab.unk_token)
    token_ids = g.op(
        "LabelEncoder",
        pieces,
        domain=ML,
        keys_strings=vocab.tokens,
        values_int64s=list(range(len(vocab.tokens))),
        default_int64=unk,
    )
    token_ids, piece_splits = _unknown_words_whole(g, token_ids, piece_splits, unk)
    return token_ids, g.op("Gather", piece_splits, word_splits, axis=0)


def _unknown_words_whole(g: Graph, token_ids: str, splits: str, unk: int):
    """A word any of whose pieces is unknown is one unknown token, as in Hugging Face's
    WordPiece (the extensions' operator keeps the pieces it found before the unknown one)."""
    starts, lengths = starts_lengths(g, splits)
    is_unk = g.op("Cast", g.op("Equal", token_ids, g.const(np.int64(unk))), to=TensorProto.INT64)
    counted = g.op("Concat", g.i64(0), g.op("CumSum", is_unk, g.const(np.int64(0))), axis=0)
    ends = g.op("Add", starts, lengths)
    unknown = g.op(
        "Greater",
        g.op("Sub", g.op("Gather", counted, ends), g.op("Gather", counted, starts)),
        g.const(np.int64(0)),
    )
    kept = g.op("Where", unknown, g.const(np.int64(1)), lengths)
    longest = g.op("ReduceMax", g.op("Concat", kept, g.i64(0), axis=0), keepdims=0)
    j = g.op(
        "Unsqueeze", g.op("Range", g.const(np.int64(0)), longest, g.const(np.int64(1))), g.i64(0)
    )
    dense = gather_ragged(g, token_ids, starts, kept, j, g.i64(unk))
    dense = g.op("Where", g.op("Unsqueeze", unknown, g.i64(1)), g.const(np.int64(unk)), dense)
    inside = g.op("Less", j, g.op("Unsqueeze", kept, g.i64(1)))
    flat = g.op("Compress", g.op("Reshape", dense, g.i64(-1)), g.op("Reshape", inside, g.i64(-1)))
    new_splits = g.op("Concat", g.i64(0), g.op("CumSum", kept, g.const(np.int64(0))), axis=0)
    return flat, new_splits


def _without_nul(g: Graph, text: str) -> str:
    """The extensions' operators read a string up to its first NUL: NULs (which the normaliser
    deletes) are taken out first by ONNX's own StringSplit."""
    pieces, _ = g.op("StringSplit", text, outputs=2, delimiter="\x00")
    return g.op("StringJoin", pieces, g.const(""), g.const(np.int64(1)), domain=CONTRIB)


def _map_characters(g: Graph, text: str, table: dict[str, str]) -> str:
    chars, _, _, splits = g.op(
        "StringRegexSplitWithOffsets",
        text,
        g.const(["(?s)(.)"]),
        g.const(["(?s)."]),
        outputs=4,
        domain=CONTRIB,
    )
    mapped = g.op(
        "StringMapping",
        chars,
        domain=CONTRIB,
        map="\n".join(f"{c}\t{out}" for c, out in table.items()),
    )
    dense = ragged_to_dense(g, mapped, splits, g.const([""]))
    return g.op("StringJoin", dense, g.const(""), g.const(np.int64(1)), domain=CONTRIB)


def text_input(name: str):
    return helper.make_tensor_value_info(name, TensorProto.STRING, [None])
