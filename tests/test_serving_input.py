"""Whatever text a client sends, the loaded SavedModel answers it (or rejects that request alone).

Through `serving_default` of the tiny run's export, as TF Serving calls it.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from conftest import hugging_face_inputs

from bert_keras import data


@pytest.fixture(scope="module")
def serve(tiny_run):
    loaded = tf.saved_model.load(str(tiny_run / "export" / "emotion" / "1"))
    return loaded.signatures["serving_default"]


def _answer(serve, texts):
    out = serve(text=tf.constant(texts, tf.string))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (len(texts), 6)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (out["label_id"].numpy() == probabilities.argmax(axis=1)).all()
    return probabilities


def test_empty_and_whitespace_only_are_answered_alike(serve):
    empty, spaces, mixed = _answer(serve, ["", "   ", " \t\n\r "])
    np.testing.assert_allclose(spaces, empty, atol=1e-6)  # both are [CLS] [SEP]
    np.testing.assert_allclose(mixed, empty, atol=1e-6)


def test_100000_characters_are_truncated_and_answered(serve):
    long = "i feel great but this is awful " * 3300
    assert len(long) > 100_000
    # Truncated to max_seq_length tokens: the same answer as its first 2,000 characters.
    whole, prefix = _answer(serve, [long, long[:2000]])
    np.testing.assert_allclose(whole, prefix, atol=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "i feel 😀🎉 today 👍🏽",
        "我今天很高兴",
        "今日はとても悲しい",
        "crème brûlée makes me feel naïve",
        "Ｆｕｌｌｗｉｄｔｈ ＴＥＸＴ",
        "\u200bzero\u200dwidth\ufeff",
        "a\u0301 combining mark",
    ],
)
def test_unicode_is_answered(serve, text):
    _answer(serve, [text])


def test_control_characters_are_deleted_as_the_training_tokenizer_does(serve):
    dirty, clean = _answer(serve, ["i feel\x00 gr\x07eat\x1b\x7f", "i feel great"])
    np.testing.assert_allclose(dirty, clean, atol=1e-6)


def test_invalid_utf8_is_replaced_then_dropped_as_hugging_face_does(serve, tiny_run, tiny_bert):
    """The answer to invalid bytes is the answer to the Hugging Face tokenizer's ids of the text
    decoded with U+FFFD in their place (which that tokenizer drops)."""
    bad = [b"i feel \xff\xfe great", b"\xc3\x28", b"\xed\xa0\x80 surrogate", b"\x80" * 1000]
    got = _answer(serve, bad)
    replaced = [b.decode("utf-8", errors="replace") for b in bad]
    by_ids = tf.saved_model.load(str(tiny_run / "export" / "emotion" / "1"))
    inputs = hugging_face_inputs(tiny_bert, replaced, 64)
    want = by_ids.signatures["serve_token_ids"](**inputs)["probabilities"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[0], _answer(serve, ["i feel great"])[0], atol=1e-6)


def test_a_batch_of_zero_gives_empty_outputs(serve):
    out = serve(text=tf.constant([], tf.string))
    assert out["probabilities"].shape == (0, 6)
    assert out["label_id"].shape == (0,) and out["label"].shape == (0,)


def test_a_batch_of_4096_matches_small_batches(serve):
    texts = data.load("emotion").splits["test"]["text"][:]
    texts = (texts * 3)[:4096]
    big = _answer(serve, texts)
    small = np.concatenate([_answer(serve, texts[i : i + 32]) for i in range(0, 128, 32)])
    # Padding to a longer batch changes float summation order only.
    np.testing.assert_allclose(big[:128], small, atol=1e-5)
    assert (big[:128].argmax(axis=1) == small.argmax(axis=1)).all()
    np.testing.assert_allclose(big[2000:2128], small, atol=1e-5)  # the same texts again
