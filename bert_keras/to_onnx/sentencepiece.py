"""SentencePiece in ONNX (XLM-RoBERTa, ALBERT): raw text -> the Hugging Face tokenizer's ids,
through onnxruntime-extensions' `SentencepieceTokenizer` on the model proto the SavedModel's
graph uses, with the normaliser's steps before it as in `serving/sentencepiece.py`.

The steps that act on one character at a time (a decomposition, `StripAccents`, `Lowercase`)
are one table, read from the `tokenizers` library itself (`families.probe`), applied by
`StringMapping`; `Replace` and `Strip` are regular expressions. A decomposition is per
character except for the canonical order of combining marks, so it is exact only where
`StripAccents` removes the marks after it; composition (NFC, NFKC) has no operator
(`refusal`): such a tokenizer's ONNX model takes token ids.
"""

import numpy as np
from tokenizers import normalizers

from bert_keras.families import probe
from bert_keras.serving.sentencepiece import PRIVATE_USE, SentencePieceSpec, regex_of
from bert_keras.to_onnx.graph import CONTRIB, Graph, map_characters, replace, without_nul

PER_CHARACTER = {
    "NFD": normalizers.NFD,
    "NFKD": normalizers.NFKD,
    "StripAccents": normalizers.StripAccents,
    "Lowercase": normalizers.Lowercase,
}


def refusal(spec: SentencePieceSpec) -> str:
    """Why the graph cannot give this tokenizer's ids from raw text ("" where it can)."""
    kinds = [step["type"] for step in spec.steps]
    for i, kind in enumerate(kinds):
        if kind in ("NFC", "NFKC"):
            return f"onnxruntime-extensions has no operator for its {kind} step"
        if kind in ("NFD", "NFKD") and "StripAccents" not in _run(kinds, i):
            return f"onnxruntime-extensions has no operator for its {kind} step's mark order"
    return ""


def ids(g: Graph, text: str, spec: SentencePieceSpec):
    """One text tensor's ids, without special tokens: (flat int64 ids, row splits)."""
    # SentencePiece reads a text up to a NUL; Hugging Face keeps it as an unknown character.
    text = without_nul(g, text, PRIVATE_USE)
    for step in _steps(spec.steps):
        text = step(g, text)
    if spec.whitespace:
        text = replace(g, text, spec.whitespace, " ")
    if spec.leading_space:
        text = replace(g, text, "^ ", "")
    zero, false = g.const(np.int64(0)), g.const(np.array(False))
    pieces, splits = g.op(
        "SentencepieceTokenizer",
        text,
        zero,  # nbest_size
        g.const(np.float32(0.0)),  # alpha
        false,  # add_bos
        false,  # add_eos
        false,  # reverse
        outputs=2,
        domain=CONTRIB,
        model=spec.model,
    )
    by_piece = g.const(np.array(hugging_face_ids(spec), np.int64))
    return g.op("Gather", by_piece, pieces, axis=0), splits


def hugging_face_ids(spec: SentencePieceSpec) -> list[int]:
    """The Hugging Face id of each of the SentencePiece model's pieces (XLM-R's are offset)."""
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(spec.model)
    index = {token: i for i, token in enumerate(spec.vocab)}
    return [index.get(piece.piece, spec.unk_id) for piece in proto.pieces]


def _run(kinds: list[str], i: int) -> list[str]:
    """The per-character steps from the i-th on."""
    run = []
    for kind in kinds[i:]:
        if kind not in PER_CHARACTER:
            break
        run.append(kind)
    return run


def _steps(steps: list[dict]):
    """The normaliser's steps as functions of (graph, text), runs of per-character ones as one
    table."""
    i = 0
    while i < len(steps):
        run = _run([step["type"] for step in steps], i)
        if run:
            steps = normalizers.Sequence([PER_CHARACTER[k]() for k in run])
            table = probe.changed(steps, separator="\x00")  # NFKD makes `|` of `｜`
            yield lambda g, text, table=table: map_characters(g, text, table)
            i += len(run)
            continue
        yield _regex(steps[i])
        i += 1


def _regex(step: dict):
    pattern, rewrite = regex_of(step)
    return lambda g, text: replace(g, text, pattern, rewrite) if pattern else text
