"""The ONNX exports' tokenizer graphs (onnxruntime-extensions' operators) against the Hugging Face
tokenizer, ids without special tokens: WordPiece on the embedded vocabulary, byte-level BPE on the
tiny RoBERTa's and on one trained to need every mend of `to_onnx/bpe.py`. Run here, where
TensorFlow is loaded, through `engines.onnx_extensions` (RTLD_DEEPBIND)."""

import random

import numpy as np
import onnxruntime
import pytest
import tiny_models
import transformers
from conftest import (
    HARD_STRINGS,
    assigned_code_points,
    code_point_texts,
    emotion_texts,
    equal_score_ties,
)
from onnx import TensorProto, helper

from bert_keras import checkpoint, engines, families, tokenize
from bert_keras.serving.bpe import BpeSpec
from bert_keras.to_onnx import bpe, graph, model, sentencepiece, wordpiece

# Texts of NULs, whitespace runs and contractions, where GPT-2's split of a whole text and of
# its pieces between NULs differ.
PARTS = ["a", "b", "1", " ", "  ", "\n", "\t", "!", "'", "s", "ll", "\x00", "é", "\u3000", "'s"]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PARTS) for _ in range(rng.randint(0, 9))) for _ in range(n)]


def _session(ids_graph):
    """An ONNX Runtime session of `ids_graph(g, "text") -> (values, splits)`."""
    g = graph.Graph("t")
    for name, output in zip(("values", "splits"), ids_graph(g, "text"), strict=True):
        g.op_named("Identity", output, name)
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in ("values", "splits")
    ]
    body = helper.make_graph(
        g.nodes, "ids", [wordpiece.text_input("text")], outputs, g.initializers
    )
    opsets = [helper.make_opsetid("", model.OPSET), helper.make_opsetid(graph.CONTRIB, 1)]
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(engines.onnx_extensions())
    onnx_model = helper.make_model(body, opset_imports=opsets + [helper.make_opsetid(graph.ML, 3)])
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), options)

    def ids(texts):  # in batches: the graphs pad a batch's rows to its longest text
        rows = []
        for start in range(0, len(texts), 64):
            batch = texts[start : start + 64]
            values, splits = session.run(None, {"text": np.array(batch, object)})
            rows += [values[splits[i] : splits[i + 1]].tolist() for i in range(len(batch))]
        return rows

    return ids


def _assert_hugging_face_ids(ids, hf, texts, ties: int = 0):
    """At most `ties` rows may differ, each a Unigram tie of equal scores."""
    got, want = ids(texts), hf(texts, add_special_tokens=False)["input_ids"]
    differ = [(t, a) for t, a, b in zip(texts, got, want, strict=True) if a != b]
    untied = [t for t, a in differ if not (ties and equal_score_ties(hf, a, t))]
    assert not untied and len(differ) <= ties, f"{len(differ)} of {len(texts)} differ: {differ[:3]}"


def _corpus() -> list[str]:
    return (
        HARD_STRINGS
        + emotion_texts("test")
        + _random_texts(5000)
        + code_point_texts(assigned_code_points())
    )


def test_the_wordpiece_graph_gives_the_hugging_face_ids():
    hf = tokenize.load_tokenizer(checkpoint.resolve("all-MiniLM-L6-v2", 128))
    spec = families.for_model_type("bert", "").tokenizer_spec(hf)
    table = wordpiece.character_table(hf)
    _assert_hugging_face_ids(_session(lambda g, t: wordpiece.ids(g, t, spec, table)), hf, _corpus())


def _stress_bpe(folder):
    """A byte-level BPE trained on texts of whitespace runs and contractions: merges such as
    `ĊĊ` and `'s` that make the whole text's split and its pieces' differ."""
    import tokenizers

    bpe_model = tokenizers.ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    corpus = [t.replace("\x00", "") for t in _random_texts(20000, seed=1)]
    bpe_model.train_from_iterator(corpus, vocab_size=600, special_tokens=specials)
    folder.mkdir()
    bpe_model.save_model(str(folder))
    transformers.RobertaTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("vocabulary", ["tiny_roberta", "stress"])
def test_the_bpe_graph_gives_the_hugging_face_ids(vocabulary, tmp_path):
    if vocabulary == "stress":
        folder = _stress_bpe(tmp_path / "stress")
    else:
        folder = tiny_models.write("roberta", tmp_path / "roberta")
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    spec = families.for_model_type("roberta", "").tokenizer_spec(hf)
    assert bpe.refusal(spec) == ""
    texts = _corpus()
    if vocabulary == "stress":  # the texts need the mends: the pieces alone tokenize otherwise
        nul = hf.convert_tokens_to_ids(bpe.NUL_PIECE)
        pieces = [
            sum(
                ([nul] + hf(p, add_special_tokens=False)["input_ids"] for p in t.split("\x00")), []
            )[1:]
            for t in texts[:6000]
        ]
        whole = hf(texts[:6000], add_special_tokens=False)["input_ids"]
        assert sum(a != b for a, b in zip(pieces, whole, strict=True)) > 100
    _assert_hugging_face_ids(_session(lambda g, t: bpe.ids(g, t, spec)), hf, texts)


def test_a_bpe_the_graph_cannot_follow_takes_token_ids():
    """A merge of the NUL byte's piece (a NUL would no longer split a word's merges), or a
    prefix space: the ONNX model takes token ids, saying why."""
    nul = bpe.NUL_PIECE
    merging = BpeSpec(["a", nul, f"a{nul}"], [f"a {nul}"], 0, False, None)
    assert "NUL" in model.token_ids_only(merging)
    assert "prefix space" in model.token_ids_only(BpeSpec(["a", nul], [], 0, True, None))
    assert model.token_ids_only(BpeSpec(["a", nul], [], 0, False, None)) == ""


def test_a_sentencepiece_normaliser_the_graph_cannot_follow_takes_token_ids(tmp_path):
    """A composition (DeBERTa-v3's NFC) has no operator; a decomposition is exact only where
    StripAccents removes the marks whose order it would change."""
    folder = tiny_models.write("deberta-v2", tmp_path / "deberta")
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    spec = families.for_model_type("deberta-v2", "").tokenizer_spec(hf)
    assert "NFC" in model.token_ids_only(spec)
    nfkd, strip, lower = ({"type": k} for k in ("NFKD", "StripAccents", "Lowercase"))
    for steps, refused in (([nfkd], True), ([nfkd, lower], True), ([nfkd, lower, strip], False)):
        spec.steps = steps
        assert bool(sentencepiece.refusal(spec)) == refused, steps


@pytest.mark.parametrize("family", ["roberta", "albert"])
def test_pairs_are_assembled_and_truncated_as_hugging_face_does(family, tmp_path):
    """RoBERTa's template `<s> a </s></s> b </s>` (byte-level BPE) and BERT's `[CLS] a [SEP] b
    [SEP]` with segment ids (ALBERT's SentencePiece), longest first, at a budget that truncates."""
    folder = tiny_models.write(family, tmp_path / family)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    spec = families.for_model_type(family, "").tokenizer_spec(hf)
    text_ids = bpe.ids if family == "roberta" else sentencepiece.ids
    # Short texts: Hugging Face's tokenizer computes every overflow of a long truncated pair
    # (huggingface/tokenizers#2035; tens of GB for the 100,000-character hard string).
    short = [t for t in HARD_STRINGS if len(t) < 1000]
    texts = short + emotion_texts("test")[:200] + _random_texts(200, seed=2)
    if family == "albert":  # without the texts of Unigram ties (the test above)
        alone = _session(lambda g, t: sentencepiece.ids(g, t, spec))(texts)
        want = hf(texts, add_special_tokens=False)["input_ids"]
        texts = [t for t, a, b in zip(texts, alone, want, strict=True) if a == b]
        assert len(texts) >= len(want) - 5
    pairs = texts[::-1]
    g = graph.Graph("t")
    inputs = [text_ids(g, name, spec) for name in ("text", "text_pair")]
    assembled = graph.assemble(g, *inputs, spec.specials, max_seq_length=16)
    names = ("token_ids", "segment_ids", "padding_mask")
    for name in names:
        g.op_named("Identity", assembled[name], name)
    outputs = [helper.make_tensor_value_info(n, TensorProto.INT32, None) for n in names]
    text_inputs = [wordpiece.text_input(n) for n in ("text", "text_pair")]
    body = helper.make_graph(g.nodes, "pairs", text_inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", model.OPSET), helper.make_opsetid(graph.CONTRIB, 1)]
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(engines.onnx_extensions())
    session = onnxruntime.InferenceSession(
        helper.make_model(body, opset_imports=opsets).SerializeToString(), options
    )
    token_ids, segment_ids, mask = session.run(
        None, {"text": np.array(texts, object), "text_pair": np.array(pairs, object)}
    )
    want = hf(texts, pairs, truncation=True, max_length=16, return_token_type_ids=True)
    lengths = mask.sum(axis=1)
    assert [row[:n].tolist() for row, n in zip(token_ids, lengths, strict=True)] == want[
        "input_ids"
    ]
    if family == "albert":
        got = [row[:n].tolist() for row, n in zip(segment_ids, lengths, strict=True)]
        assert got == want["token_type_ids"]
