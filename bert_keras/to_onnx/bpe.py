"""Byte-level BPE in ONNX (RoBERTa): raw text -> the Hugging Face tokenizer's ids, through
onnxruntime-extensions' `GPT2Tokenizer` (GPT-2's split, bytes to characters, the merges).

That operator gives the Hugging Face ids on every text without a NUL, but reads a text only up
to its first NUL. So the text is split at its NULs by ONNX's own StringSplit, each piece is
tokenized, and each NUL is its byte's piece (`Ā`), which is exact where no merge has that piece
(`refusal` checks): a symbol that never merges splits a word's merges in two. Two places where
GPT-2's split of the whole text differs from that of the pieces are mended (each found by
comparing with the Hugging Face tokenizer on random texts, docs/serving.md):
- a piece that ends in two or more whitespace characters before a NUL: the split's look-ahead
  (`\\s+(?!\\S)`) leaves the last one out of the run, so it is tokenized alone;
- a piece after a NUL that starts with a contraction (`'s`): the whole text's split puts the
  apostrophe with the NUL (`[^\\s\\p{L}\\p{N}]+`), so it is tokenized alone.
"""

import json

import numpy as np
from onnx import TensorProto

from bert_keras.serving.bpe import _WS, BpeSpec, bytes_to_unicode
from bert_keras.to_onnx.graph import CONTRIB, Graph

NUL_PIECE = bytes_to_unicode()[0]
_CONTRIB = {"domain": CONTRIB}


def refusal(spec: BpeSpec) -> str:
    """Why the graph cannot give this tokenizer's ids from raw text ("" where it can)."""
    if spec.add_prefix_space:
        return "its pre-tokenizer adds a prefix space"
    if NUL_PIECE not in spec.vocab or any(NUL_PIECE in m for m in spec.merges):
        return f"a merge takes the NUL byte's piece {NUL_PIECE}"
    return ""


def ids(g: Graph, text: str, spec: BpeSpec):
    """One text tensor's ids, without special tokens: (flat int64 ids, row splits)."""
    pieces, counts = g.op("StringSplit", text, outputs=2, delimiter="\x00")  # [rows, p]
    k = g.op("Range", g.const(np.int64(0)), g.op("Shape", pieces, start=1), g.const(np.int64(1)))
    k = g.op("Unsqueeze", k, g.i64(0))  # [1, p]
    last = g.op("Sub", g.op("Unsqueeze", counts, g.i64(1)), g.const(np.int64(1)))  # [rows, 1]
    followed = g.op("Reshape", g.op("Less", k, last), g.i64(-1))  # a NUL after the piece
    k = g.op("Add", k, g.op("Sub", last, last))  # [rows, p]
    preceded = g.op("Reshape", g.op("Greater", k, g.const(np.int64(0))), g.i64(-1))
    flat = g.op("Reshape", pieces, g.i64(-1))
    prefix, main = _split_off(g, flat, "^'(s|t|re|ve|m|ll|d)", r"\1", preceded, g.const(["'"]))
    ends = g.op("StringRegexReplace", main, g.const(["(?s)^.*(.)$"]), g.const([r"\1"]), **_CONTRIB)
    suffix, main = _split_off(g, main, f"([{_WS}])[{_WS}]$", r"\1", followed, ends)
    parts = [g.op("Unsqueeze", x, g.i64(1)) for x in (prefix, main, suffix)]
    token_ids, mask, _ = g.op(
        "GPT2Tokenizer",
        g.op("Reshape", g.op("Concat", *parts, axis=1), g.i64(-1)),
        outputs=3,
        vocab=json.dumps({t: i for i, t in enumerate(spec.vocab)}),
        merges="#version: 0.2\n" + "\n".join(spec.merges),
        padding_length=-1,
        **_CONTRIB,
    )
    # Per piece: its parts' ids, then the NUL's where one follows.
    nul = g.op("Cast", followed, to=TensorProto.INT64)
    nul_id = g.op("Mul", nul, g.const(np.int64(spec.vocab.index(NUL_PIECE))))
    by_piece = g.op("Concat", g.op("Shape", flat), g.i64(-1), axis=0)
    token_ids = _append(g, g.op("Reshape", token_ids, by_piece), nul_id)
    mask = _append(g, g.op("Reshape", mask, by_piece), nul)
    by_row = g.op("Concat", g.op("Shape", pieces, end=1), g.i64(-1), axis=0)
    lengths = g.op("ReduceSum", g.op("Reshape", mask, by_row), g.i64(1), keepdims=0)
    kept = g.op("Cast", g.op("Reshape", mask, g.i64(-1)), to=TensorProto.BOOL)
    values = g.op("Compress", g.op("Reshape", token_ids, g.i64(-1)), kept)
    return values, g.op("Concat", g.i64(0), g.op("CumSum", lengths, g.const(np.int64(0))), axis=0)


def _append(g: Graph, matrix: str, column: str) -> str:
    return g.op("Concat", matrix, g.op("Unsqueeze", column, g.i64(1)), axis=1)


def _split_off(g: Graph, texts: str, pattern: str, rewrite: str, where: str, part):
    """(the part split off, the rest) for texts that match `pattern` where `where`; ("", the
    text) for the others. `part`: one string, or one per text."""
    rest = g.op("StringRegexReplace", texts, g.const([pattern]), g.const([rewrite]), **_CONTRIB)
    changed = g.op("Not", g.op("StringEqual", rest, texts, **_CONTRIB))
    split = g.op("And", changed, where)
    return g.op("Where", split, part, g.const([""])), g.op("Where", split, rest, texts)
