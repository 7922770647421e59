"""WordPiece in ONNX (BERT, DistilBERT, ELECTRA): raw text -> the Hugging Face tokenizer's ids,
of onnxruntime-extensions' string operators.

The Hugging Face normaliser and the BERT pre-tokenizer both work one character at a time, so
their whole effect is one table, read from the `tokenizers` library itself (`families.probe`):
each character to its normalised characters, whitespace made a space and punctuation given a
space on each side. The text's characters go through it (`StringMapping`, joined again), ONNX's
`StringSplit` at spaces gives the words, `WordpieceTokenizer` their pieces and `LabelEncoder`
the ids. A table lookup per character costs a fraction of what regular expressions of the
Unicode classes did (the extensions compile a pattern on every call; docs/serving.md).
"""

import json

import numpy as np
from onnx import TensorProto, helper
from tokenizers import pre_tokenizers

from bert_keras.families import probe
from bert_keras.serving.wordpiece import Vocab
from bert_keras.to_onnx.graph import (
    CONTRIB,
    ML,
    Graph,
    gather_ragged,
    map_characters,
    starts_lengths,
    without_nul,
)


def character_table(tokenizer) -> dict[str, str]:
    """Each character that the tokenizer's normaliser and then its (BERT) pre-tokenizer change,
    and what they make of it: its normalised characters, each whitespace one a space and each
    punctuation one with a space on either side."""
    normalised = probe.changed(tokenizer.backend_tokenizer.normalizer)
    split = probe.split_classes(pre_tokenizers.BertPreTokenizer())
    spaces, punctuation = split["whitespace"], split["punctuation"]

    def words(out: str) -> str:
        return "".join(" " if d in spaces else f" {d} " if d in punctuation else d for d in out)

    table = {c: words(normalised.get(c, c)) for c in set(normalised) | spaces | punctuation}
    return {c: out for c, out in table.items() if out != c}


def ids(g: Graph, text: str, vocab: Vocab, table: dict[str, str]):
    """One text tensor's ids, without special tokens: (flat int64 ids, row splits)."""
    if table.get("\x00") == "":
        text = without_nul(g, text, "")
    pieces, counts = g.op("StringSplit", map_characters(g, text, table), outputs=2, delimiter=" ")
    flat = g.op("Reshape", pieces, g.i64(-1))
    filled = g.op("Not", g.op("Equal", flat, g.const([""])))  # between two spaces: no word
    per_row = g.op("Concat", g.op("Shape", pieces, end=1), g.i64(-1), axis=0)
    counts = g.op("Reshape", g.op("Cast", filled, to=TensorProto.INT64), per_row)
    counts = g.op("ReduceSum", counts, g.i64(1), keepdims=0)
    word_splits = g.op("Concat", g.i64(0), g.op("CumSum", counts, g.const(np.int64(0))), axis=0)
    pieces, piece_splits, _, _ = g.op(
        "WordpieceTokenizer",
        g.op("Compress", flat, filled),
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


def text_input(name: str):
    return helper.make_tensor_value_info(name, TensorProto.STRING, [None])
