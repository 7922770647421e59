"""What the SentencePiece families (XLM-RoBERTa, ALBERT) share: reading a Hugging Face
SentencePiece tokenizer into what the graph needs, and refusing one it cannot reproduce."""

import base64
import json
from pathlib import Path

from bert_keras.errors import UsageError
from bert_keras.families import Family, probe
from bert_keras.serving.pairs import Specials
from bert_keras.serving.sentencepiece import STEPS, SentencePieceSpec, SentencePieceTokenizer


class SentencePieceFamily:
    """For a family tokenized by SentencePiece: `tokenizer_files[0]` is its model file, and
    `pair_separators` its pair template's (1: BERT's, 2: RoBERTa's)."""

    pair_separators: int
    hub_tokenizer = Family.hub_tokenizer  # a keras-hub preset ships no Hugging Face tokenizer

    def tokenizer_spec(self, tokenizer) -> SentencePieceSpec:
        return spec(tokenizer, self.tokenizer_files[0], self.pair_separators)

    def in_graph_tokenizer(self, spec: SentencePieceSpec, max_seq_length: int):
        return SentencePieceTokenizer(spec, max_seq_length)


def spec(tokenizer, model_file_name: str, pair_separators: int) -> SentencePieceSpec:
    """`model_file_name`: the SentencePiece model beside tokenizer.json (the family's file)."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    steps = _steps(backend, tokenizer.name_or_path)
    return SentencePieceSpec(
        model=model_file(tokenizer, model_file_name).read_bytes(),
        vocab=vocabulary(tokenizer),
        steps=[_with_tables(step) for step in steps],
        whitespace=_whitespace(backend),
        unk_id=tokenizer.unk_token_id,
        specials=Specials(
            tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, pair_separators
        ),
    )


def model_file(tokenizer, name: str) -> Path:
    path = Path(getattr(tokenizer, "vocab_file", None) or "")
    if not path.is_file():
        path = Path(tokenizer.name_or_path) / name
    if not path.is_file():
        raise UsageError(
            f"the tokenizer of {tokenizer.name_or_path} has no {name}, which the export's "
            f"in-graph tokenizer needs; put it beside tokenizer.json."
        )
    return path


def vocabulary(tokenizer) -> list[str]:
    """The Hugging Face vocabulary, index = id."""
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise UsageError("the tokenizer's vocab ids are not 0..n-1; the graph cannot map them.")
    return [t for t, _ in by_id]


def _steps(backend: dict, name: str) -> list[dict]:
    """The normaliser's steps before the precompiled character map; a UsageError for any step,
    pre-tokenizer or model the graph does not reproduce."""
    normalizer = backend.get("normalizer") or {}
    steps = normalizer.get("normalizers", [normalizer] if normalizer else [])
    if not steps or steps[-1]["type"] != "Precompiled":
        return _refuse(name, "its normaliser does not end with SentencePiece's character map")
    for step in steps[:-1]:
        literal = step["type"] != "Replace" or "String" in step["pattern"]
        if step["type"] not in STEPS or not literal:
            return _refuse(name, f"its normaliser has a {step['type']} step")
    pre = backend.get("pre_tokenizer") or {}
    kinds = [p["type"] for p in pre.get("pretokenizers", [pre])]
    metaspace = (pre.get("pretokenizers") or [pre])[-1]
    if (
        kinds not in (["Metaspace"], ["WhitespaceSplit", "Metaspace"])
        or metaspace.get("prepend_scheme", "always") != "always"
    ):
        return _refuse(name, f"its pre-tokenizer is {kinds}, not SentencePiece's")
    if backend["model"]["type"] != "Unigram":
        return _refuse(name, f"its model is {backend['model']['type']}, not a Unigram")
    return steps[:-1]


def _with_tables(step: dict) -> dict:
    """A step with the characters it changes, as the `tokenizers` library has them, where TF's
    Unicode tables differ: StripAccents' marks (a class), Lowercase's table."""
    from tokenizers import normalizers

    if step["type"] == "StripAccents":
        stripped = probe.changed(normalizers.StripAccents())
        return {**step, "marks": probe.char_class(c for c, out in stripped.items() if out == "")}
    if step["type"] == "Lowercase":
        return {**step, "table": probe.changed(normalizers.Lowercase())}
    return step


def _whitespace(backend: dict) -> str:
    """What the pre-tokenizer splits at beyond the space (U+0085 and the like: SentencePiece
    splits at spaces only) and the character map leaves as it is."""
    from tokenizers import normalizers, pre_tokenizers

    split = probe.split_classes(pre_tokenizers.WhitespaceSplit())["whitespace"]
    charsmap = backend["normalizer"].get("normalizers", [backend["normalizer"]])[-1]
    charsmap = normalizers.Precompiled(base64.b64decode(charsmap["precompiled_charsmap"]))
    return probe.char_class(c for c in split if charsmap.normalize_str(c) == c != " ")


def _refuse(name: str, why: str):
    raise UsageError(
        f"the tokenizer of {name} cannot be reproduced in the export's graph: {why}. Use the "
        f"checkpoint's own SentencePiece tokenizer."
    )
