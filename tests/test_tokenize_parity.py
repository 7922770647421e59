"""The export's in-graph tokenizer gives exactly the training tokenizer's ids: the embedded
model's (uncased) WordPiece, and the same vocabulary cased and lowercased without stripping
accents, on every assigned code point, the hard strings and emotion's texts."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import HARD_STRINGS, assigned_code_points, code_point_texts, emotion_texts

from bert_keras import checkpoint, tokenize
from bert_keras.families import for_model_type
from bert_keras.serving.wordpiece import WordPieceTokenizer

MAX_SEQ_LENGTH = 128


# The embedded tokenizer's BertNormalizer settings: as shipped (uncased), cased, and lowercase
# without stripping accents.
VARIANTS = {
    "uncased": {},
    "cased": {"do_lower_case": False},
    "lowercase_keeps_accents": {"strip_accents": False},
}


@pytest.fixture(scope="module", params=VARIANTS)
def tokenizers(request):
    ckpt = checkpoint.resolve(checkpoint.EMBEDDED_NAME, MAX_SEQ_LENGTH)
    hf = tokenize.load_tokenizer(ckpt)
    if request.param != "uncased":
        import transformers

        hf = transformers.BertTokenizerFast(vocab=hf.get_vocab(), **VARIANTS[request.param])
        hf.name_or_path = str(ckpt.source)
    return hf, WordPieceTokenizer(for_model_type("bert", "").tokenizer_spec(hf), MAX_SEQ_LENGTH)


def test_every_assigned_code_point_alone_and_in_a_word(tokenizers):
    texts = code_point_texts(assigned_code_points())
    for start in range(0, len(texts), 10_000):
        _assert_same_ids(texts[start : start + 10_000], *tokenizers)


def _assert_same_ids(texts, hf, in_graph):
    want = hf(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    got = in_graph(tf.constant(texts))
    token_ids = got["token_ids"].numpy()
    lengths = got["padding_mask"].numpy().sum(axis=1)
    for i, ids in enumerate(want):
        assert token_ids[i, : lengths[i]].tolist() == ids, f"text {i}: {texts[i][:80]!r}"
    assert (got["segment_ids"].numpy() == 0).all()


def test_hard_strings(tokenizers):
    _assert_same_ids(HARD_STRINGS, *tokenizers)


def test_truncates_long_text_to_max_seq_length(tokenizers):
    got = tokenizers[1](tf.constant([" ".join(["word"] * 5000)]))
    assert got["token_ids"].shape == (1, MAX_SEQ_LENGTH)
    assert got["token_ids"][0, -1] == tokenizers[0].sep_token_id


def test_all_emotion_texts(tokenizers):
    texts = emotion_texts()
    assert len(texts) == 20_000
    for start in range(0, len(texts), 5_000):
        _assert_same_ids(texts[start : start + 5_000], *tokenizers)


def test_invalid_utf8_is_answered(tokenizers):
    got = tokenizers[1](tf.constant([b"caf\xc3 ok \xff\xfe", b"fine"]))
    assert got["token_ids"].shape[0] == 2
    assert np.all(got["padding_mask"].numpy().sum(axis=1) >= 2)
