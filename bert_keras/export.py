"""Stage 7: a SavedModel that TF Serving serves from raw text.

Layout `<base>/<name>/<version>/` (TF Serving's). Each version is written to a temporary
sibling and renamed into place when complete, so a server watching `<base>/<name>` never sees
half a model, and an existing version is never overwritten.

Signatures:
- `serving_default`: `text` (tf.string [None]) -> `probabilities` (float32 [None, labels]),
  `label_id` (int32 [None]), `label` (tf.string [None]).
- `serve_token_ids`: `token_ids`, `segment_ids`, `padding_mask` (int32 [None, None]) -> the same,
  for clients that tokenize themselves.

Tokenization runs in the graph with TF Text's FastBertTokenizer, built from the training
tokenizer's vocab and normalisation; the graph uses only core ops and TF Text's FastBert ops
(no RoundRobinTrim, which the TF Text in TF Serving 2.12-2.19 lacks). Load it with
`import tensorflow_text` first:

>>> import tensorflow as tf, tensorflow_text  # noqa: F401 (registers the TF Text ops)
>>> serve = tf.saved_model.load("runs/emotion/export/emotion/1").signatures["serving_default"]
>>> serve(text=tf.constant(["i feel great"]))["label"]
<tf.Tensor: shape=(1,), dtype=string, numpy=array([b'joy'], dtype=object)>
"""

import json
import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from bert_keras.tokenize import Vocab

# What the Hugging Face BERT normaliser deletes: control and format characters (Unicode
# category C) except tab, newline and carriage return, which are whitespace, and U+FFFD. TF
# Text's normaliser would turn them into spaces, splitting words HF keeps whole.
_DELETED_CHARS = r"[^\P{C}\t\n\r]|\x{fffd}"


class InGraphTokenizer(tf.Module):
    """Raw text -> the model's inputs, in the graph, exactly as the Hugging Face tokenizer.

    >>> InGraphTokenizer(vocab, max_seq_length=128)(tf.constant(["i feel great"]))["token_ids"]
    <tf.Tensor: shape=(1, 5), dtype=int32, numpy=array([[ 101, 1045, 2514, 2307,  102]]...)>
    """

    def __init__(self, vocab: Vocab, max_seq_length: int):
        super().__init__()
        self.vocab = vocab
        self.max_seq_length = max_seq_length
        self.fast_bert = tf_text.FastBertTokenizer(
            vocab=vocab.tokens,
            lower_case_nfd_strip_accents=vocab.lowercase,
            unknown_token=vocab.unk_token,
            token_out_type=tf.int32,
        )

    def __call__(self, text):
        # Invalid UTF-8 becomes U+FFFD (then deleted) instead of failing the whole request.
        text = tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        text = tf.strings.regex_replace(text, _DELETED_CHARS, "")
        pieces = self.fast_bert.tokenize(text)[:, : self.max_seq_length - 2]
        edge = tf.ones([pieces.nrows(), 1], tf.int32)
        token_ids = tf.concat(
            [
                tf.RaggedTensor.from_tensor(edge * self.vocab.cls_id),
                pieces,
                tf.RaggedTensor.from_tensor(edge * self.vocab.sep_id),
            ],
            axis=1,
        )
        return {
            "token_ids": token_ids.to_tensor(self.vocab.pad_id),
            "segment_ids": tf.zeros_like(token_ids).to_tensor(0),
            "padding_mask": tf.ones_like(token_ids).to_tensor(0),
        }


class TextClassifier(tf.Module):
    """The fine-tuned model with its tokenizer in front, as saved in the export."""

    def __init__(self, model: keras.Model, vocab: Vocab, max_seq_length: int, label_names):
        super().__init__()
        # The weights alone are tracked: tracking the Keras model would save its optimizer's
        # state too (measured for MiniLM: 265 MB instead of 90 MB).
        self.weights = list(model.weights)
        self._forward = lambda inputs: model(inputs, training=False)
        self.tokenizer = InGraphTokenizer(vocab, max_seq_length)
        self.label_names = list(label_names)

    def classify(self, inputs):
        logits = tf.cast(self._forward(inputs), tf.float32)
        label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {
            "probabilities": tf.nn.softmax(logits),
            "label_id": label_id,
            "label": tf.gather(tf.constant(self.label_names), label_id),
        }

    # No autograph: there is no Python control flow to convert, and with it two full MiniLM runs
    # failed at export inside autograph-converted calls (a wrong object reached the model; root
    # cause not found, never seen on short runs).
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")], autograph=False)
    def serve_text(self, text):
        return self.classify(self.tokenizer(text))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name=name)
            for name in ("token_ids", "segment_ids", "padding_mask")
        ],
        autograph=False,
    )
    def serve_token_ids(self, token_ids, segment_ids, padding_mask):
        return self.classify(
            {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
        )


def next_version(model_base: Path) -> int:
    versions = [int(p.name) for p in model_base.glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def export(
    model: keras.Model,
    vocab: Vocab,
    max_seq_length: int,
    label_names,
    export_base: Path,
    name: str,
    metadata: dict,
) -> Path:
    """Writes the next free version of `<export_base>/<name>` and returns its path."""
    model_base = Path(export_base) / name
    model_base.mkdir(parents=True, exist_ok=True)
    version = next_version(model_base)
    tmp = model_base / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    module = TextClassifier(model, vocab, max_seq_length, label_names)
    tf.saved_model.save(
        module,
        str(tmp),
        signatures={
            "serving_default": module.serve_text,
            "serve_token_ids": module.serve_token_ids,
        },
    )
    assets = tmp / "assets"
    assets.mkdir(exist_ok=True)
    (assets / "labels.txt").write_text("\n".join(label_names) + "\n")
    (assets / "vocab.txt").write_text("\n".join(vocab.tokens) + "\n")
    info = {
        "max_seq_length": max_seq_length,
        "label_names": list(label_names),
        "vocab_sha256": vocab.sha256,
        "lowercase": vocab.lowercase,
        **metadata,
    }
    (assets / "bert_keras.json").write_text(json.dumps(info, indent=2) + "\n")
    final = model_base / str(version)
    os.rename(tmp, final)  # Fails rather than replace, if a version appeared meanwhile.
    return final
