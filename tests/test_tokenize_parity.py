"""The export's in-graph tokenizer gives exactly the training tokenizer's ids."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import HARD_STRINGS, emotion_texts

from bert_keras import checkpoint, tokenize
from bert_keras.families import for_model_type
from bert_keras.serving.wordpiece import WordPieceTokenizer

MAX_SEQ_LENGTH = 128


@pytest.fixture(scope="module")
def tokenizers():
    ckpt = checkpoint.resolve(checkpoint.EMBEDDED_NAME, MAX_SEQ_LENGTH)
    hf = tokenize.load_tokenizer(ckpt)
    return hf, WordPieceTokenizer(for_model_type("bert", "").tokenizer_spec(hf), MAX_SEQ_LENGTH)


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
