"""Stage 7: a SavedModel that TF Serving serves from raw text.

Layout `<base>/<name>/<version>/` (TF Serving's). Each version is written to a temporary
sibling and renamed into place when complete, so a server watching `<base>/<name>` never sees
half a model, and an existing version is never overwritten.

Signatures:
- `serving_default`: `text` (tf.string [None]; and `text_pair` for a sentence-pair model) ->
  `probabilities` (float32 [None, labels]), `label_id` (int32 [None]), `label` (tf.string [None]).
- `serve_token_ids`: `token_ids`, `segment_ids`, `padding_mask` (int32 [None, None]) -> the same,
  for clients that tokenize themselves.

`MODEL_CARD.md` (data, metrics, hyperparameters, limits) sits beside `saved_model.pb`.

Tokenization runs in the graph with TF Text's FastBertTokenizer, built from the training
tokenizer's vocab and normalisation; the graph uses only core ops and TF Text's FastBert ops
(no RoundRobinTrim, which the TF Text in TF Serving 2.12-2.19 lacks). Load it with
`import tensorflow_text` first:

>>> import tensorflow as tf, tensorflow_text  # noqa: F401 (registers the TF Text ops)
>>> serve = tf.saved_model.load("runs/emotion/export/emotion/1").signatures["serving_default"]
>>> serve(text=tf.constant(["i feel great"]))["label"]
<tf.Tensor: shape=(1,), dtype=string, numpy=array([b'joy'], dtype=object)>
"""

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf
import tensorflow_text as tf_text
from absl import app, flags, logging
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from bert_keras import checkpoint, data, model, report, rundir, tokenize
from bert_keras.errors import exit_on_usage_error
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

    def __call__(self, text, text_pair=None):
        """[CLS] text [SEP], or [CLS] text [SEP] text_pair [SEP] with segment ids 0 then 1."""
        first = self._pieces(text)
        edge = tf.ones([first.nrows(), 1], tf.int32)
        cls = tf.RaggedTensor.from_tensor(edge * self.vocab.cls_id)
        sep = tf.RaggedTensor.from_tensor(edge * self.vocab.sep_id)
        if text_pair is None:
            parts = [cls, first[:, : self.max_seq_length - 2], sep]
            segment_of = [0, 0, 0]
        else:
            second = self._pieces(text_pair)
            keep_first, keep_second = longest_first(
                first.row_lengths(), second.row_lengths(), self.max_seq_length - 3
            )
            parts = [cls, _head(first, keep_first), sep, _head(second, keep_second), sep]
            segment_of = [0, 0, 0, 1, 1]
        token_ids = tf.concat(parts, axis=1)
        segment_ids = tf.concat(
            [tf.ones_like(part) * segment for part, segment in zip(parts, segment_of, strict=True)],
            axis=1,
        )
        return {
            "token_ids": token_ids.to_tensor(self.vocab.pad_id),
            "segment_ids": segment_ids.to_tensor(0),
            "padding_mask": tf.ones_like(token_ids).to_tensor(0),
        }

    def _pieces(self, text) -> tf.RaggedTensor:
        # Invalid UTF-8 becomes U+FFFD (then deleted) instead of failing the whole request.
        text = tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        text = tf.strings.regex_replace(text, _DELETED_CHARS, "")
        return self.fast_bert.tokenize(text)


def longest_first(first, second, budget):
    """How many tokens of each text a pair keeps within `budget`: the Hugging Face tokenizers'
    `longest_first` truncation (tokenizers/src/utils/truncation.rs), per row. The shorter text
    is kept whole if the longer can have the rest; else each gets half, the longer (the second
    on ties) the odd token."""
    budget = tf.cast(budget, first.dtype)
    first_shorter = first <= second
    short = tf.minimum(first, second)
    halves = 2 * short > budget
    keep_short = tf.where(halves, budget // 2, short)
    keep_long = tf.where(halves, budget // 2 + budget % 2, budget - short)
    fits = first + second <= budget
    keep_first = tf.where(fits, first, tf.where(first_shorter, keep_short, keep_long))
    keep_second = tf.where(fits, second, tf.where(first_shorter, keep_long, keep_short))
    return keep_first, keep_second


def _head(ragged: tf.RaggedTensor, lengths) -> tf.RaggedTensor:
    """The first lengths[i] items of each row i."""
    positions = tf.ragged.range(ragged.row_lengths())
    return tf.ragged.boolean_mask(ragged, positions < tf.cast(lengths, tf.int64)[:, None])


# Rows per model call inside one request (see TextClassifier.logits_by_length). Measured on the
# emotion export, batches of 64 test texts, 2 cores: 1 call of 64 rows 90 texts/s; chunks of 32
# 140, 16 177, 8 197, 4 194.
CHUNK_ROWS = 8


class TextClassifier(tf.Module):
    """The fine-tuned model with its tokenizer in front, as saved in the export."""

    def __init__(
        self,
        classifier: keras.Model,
        vocab: Vocab,
        max_seq_length: int,
        label_names,
        text_pair: bool = False,
    ):
        super().__init__()
        self.text_pair = text_pair
        # The weights alone are tracked: tracking the Keras model would save its optimizer's
        # state too (measured for MiniLM: 265 MB instead of 90 MB). And the tf.Variables inside
        # the Keras variables, not the Keras variables: those save as copies ("Variable_N") that
        # the checkpoint restores while the graph reads the originals, so a session-based loader
        # (TF Serving, saved_model_cli run) fails with "Could not find variable ..."
        # (tensorflow/serving#2250, keras-team/keras#20095); tf.saved_model.load hides it.
        self.weights = [w.value for w in classifier.weights]
        self._forward = lambda inputs: classifier(inputs, training=False)
        self.tokenizer = InGraphTokenizer(vocab, max_seq_length)
        self.label_names = list(label_names)

    def classify(self, inputs):
        logits = self.logits_by_length(inputs)
        label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {
            "probabilities": tf.nn.softmax(logits),
            "label_id": label_id,
            "label": tf.gather(tf.constant(self.label_names), label_id),
        }

    def logits_by_length(self, inputs):
        """The model on rows sorted by length, CHUNK_ROWS at a time, each chunk cut to its own
        longest row; logits back in request order.

        A request's batch is padded to its longest text, and attention and dense layers would
        spend most of their time on padding (emotion: 22 tokens on average, 60+ in a batch of
        64). Masked positions change no real token's output, so cutting them changes nothing
        but float summation order.
        """
        mask = inputs["padding_mask"]
        positions = tf.range(1, tf.shape(mask)[1] + 1)[None, :]
        # Up to the last real token (clients of serve_token_ids may pad anywhere).
        extent = tf.reduce_max(tf.where(mask != 0, positions, 0), axis=1)
        order = tf.argsort(extent, stable=True)
        rows = tf.shape(order)[0]
        chunks = (rows + CHUNK_ROWS - 1) // CHUNK_ROWS

        def chunk_logits(i, results):
            chunk = order[i * CHUNK_ROWS : tf.minimum((i + 1) * CHUNK_ROWS, rows)]
            # At least 1 column: the model reads column 0 even for an all-padding row.
            width = tf.maximum(tf.reduce_max(tf.gather(extent, chunk)), 1)
            cut = {name: tf.gather(value, chunk)[:, :width] for name, value in inputs.items()}
            return i + 1, results.write(i, tf.cast(self._forward(cut), tf.float32))

        _, results = tf.while_loop(
            lambda i, _: i < chunks,
            chunk_logits,
            [
                tf.constant(0),
                tf.TensorArray(
                    tf.float32,
                    size=chunks,
                    infer_shape=False,
                    element_shape=[None, len(self.label_names)],
                ),
            ],
        )
        return tf.gather(results.concat(), tf.math.invert_permutation(order))

    def serving_default(self):
        """The raw-text signature: (text) or, for a sentence-pair model, (text, text_pair).

        No autograph: there is no Python control flow to convert, and with it two full MiniLM
        runs failed at export inside autograph-converted calls (a wrong object reached the model;
        root cause not found, never seen on short runs).
        """
        text = tf.TensorSpec([None], tf.string, name="text")
        if self.text_pair:
            pair = tf.TensorSpec([None], tf.string, name="text_pair")
            return tf.function(
                lambda text, text_pair: self.classify(self.tokenizer(text, text_pair)),
                input_signature=[text, pair],
                autograph=False,
            )
        return tf.function(
            lambda text: self.classify(self.tokenizer(text)),
            input_signature=[text],
            autograph=False,
        )

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


# === Warmup: TF Serving replays these PredictionLog records at load, before the first request ===

WARMUP_TEXTS = [
    "i feel great",
    "",
    "i didnt feel humiliated",
    "i can go from feeling so hopeless to so damned hopeful just from being around someone who "
    "cares and is awake",
    "im grabbing a minute to post i feel greedy wrong",
    "i am ever feeling nostalgic about the fireplace i will know that it is still on the property",
    "i have been with petronas for years i feel that petronas has performed well and made a huge "
    "profit " * 20,  # longer than any max_seq_length: the truncation path
    "ive been feeling a little burdened lately wasnt sure why that was",
]


def warmup_records(name: str, tokenizer: InGraphTokenizer, text_pair: bool) -> list[bytes]:
    """Batches of 1 and 8 texts (or pairs) for `serving_default`, and 8 rows of ids for
    `serve_token_ids`."""
    requests = []
    pairs = WARMUP_TEXTS[::-1]
    for n in (1, len(WARMUP_TEXTS)):
        request = predict_pb2.PredictRequest()
        inputs = {"text": WARMUP_TEXTS[:n], **({"text_pair": pairs[:n]} if text_pair else {})}
        for key, texts in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
        requests.append(("serving_default", request))
    request = predict_pb2.PredictRequest()
    ids = tokenizer(tf.constant(WARMUP_TEXTS), tf.constant(pairs) if text_pair else None)
    for key, value in ids.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    requests.append(("serve_token_ids", request))
    records = []
    for signature, request in requests:
        request.model_spec.name = name
        request.model_spec.signature_name = signature
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


# === Writing a version ===


def next_version(model_base: Path) -> int:
    versions = [int(p.name) for p in model_base.glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def write(
    classifier: keras.Model,
    vocab: Vocab,
    max_seq_length: int,
    label_names: list[str],
    model_base: Path,
    info: dict,
) -> Path:
    """Writes the next free version of `model_base` (`<base>/<name>`) and returns its path."""
    model_base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_base, prefix=".tmp-"))  # not a number: servers skip it
    try:
        module = TextClassifier(
            classifier, vocab, max_seq_length, label_names, text_pair=info["text_pair"]
        )
        tf.saved_model.save(
            module,
            str(tmp),
            signatures={
                "serving_default": module.serving_default(),
                "serve_token_ids": module.serve_token_ids,
            },
        )
        assets = tmp / "assets"
        assets.mkdir(exist_ok=True)
        (assets / "labels.txt").write_text("\n".join(label_names) + "\n")
        (assets / "vocab.txt").write_text("\n".join(vocab.tokens) + "\n")
        (assets / "bert_keras.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "MODEL_CARD.md").write_text(report.model_card(info))
        extra = tmp / "assets.extra"
        extra.mkdir()
        with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
            for record in warmup_records(model_base.name, module.tokenizer, module.text_pair):
                writer.write(record)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a server may run as another user
        return _rename_to_next_version(tmp, model_base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_to_next_version(tmp: Path, model_base: Path) -> Path:
    """os.rename refuses a non-empty target: a version written meanwhile is never replaced."""
    while True:
        final = model_base / str(next_version(model_base))
        try:
            os.rename(tmp, final)
            return final
        except OSError:
            if not final.exists():
                raise


# === From a run directory: the trainer's export and `python -m bert_keras.export` ===


def from_run(
    run_dir: Path,
    export_base: Path | None = None,
    model_name: str | None = None,
    classifier: keras.Model | None = None,
    results: dict | None = None,
) -> Path:
    """Exports a run's best checkpoint as the next version of `<export_base>/<model_name>`.

    The trainer passes the classifier it holds and its results; the CLI rebuilds the classifier
    from the run's flags and reads `metrics.json`.
    """
    run_dir = Path(run_dir)
    run_flags = rundir.read_flags(run_dir)
    label_names = rundir.read_labels(run_dir)
    max_seq_length = int(run_flags["max_seq_length"])
    ckpt = checkpoint.resolve(run_flags["model"], max_seq_length)
    vocab = tokenize.vocab_of(tokenize.load_tokenizer(ckpt))
    if classifier is None:
        classifier = model.load_best(run_dir, ckpt, run_flags["pooling"], len(label_names))
    if results is None and (run_dir / rundir.FINISHED).is_file():
        results = json.loads((run_dir / rundir.FINISHED).read_text())
    model_name = model_name or run_flags.get("export_name") or data.name_of(run_flags["dataset"])
    text_pair = bool(run_flags.get("text_pair_column"))
    info = {
        "format": "bert_keras export 1",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": ckpt.name,
        "dataset": run_flags["dataset"],
        "label_names": label_names,
        "max_seq_length": max_seq_length,
        "pooling": run_flags["pooling"],
        "vocab_size": len(vocab.tokens),
        "vocab_sha256": vocab.sha256,
        "lowercase": vocab.lowercase,
        "text_pair": text_pair,
        "signatures": signatures(text_pair),
        "training": {
            "run_dir": str(run_dir.resolve()),
            "finished": results is not None,
            "flags": run_flags,
            **(_training_metrics(results) if results else {}),
        },
        "versions": {
            "training": (results or {}).get("versions"),
            "export": rundir.versions(),
        },
    }
    return write(
        classifier,
        vocab,
        max_seq_length,
        label_names,
        Path(export_base or run_dir / "export") / model_name,
        info,
    )


def signatures(text_pair: bool) -> dict:
    """The export's signatures, as recorded in bert_keras.json."""
    texts = ("text", "text_pair") if text_pair else ("text",)
    return {
        "serving_default": {
            "inputs": {name: "string [batch]" for name in texts},
            "outputs": {
                "probabilities": "float32 [batch, labels]",
                "label_id": "int32 [batch]",
                "label": "string [batch]",
            },
        },
        "serve_token_ids": {
            "inputs": {name: "int32 [batch, tokens]" for name in model.INPUTS},
            "outputs": "as serving_default",
        },
    }


def _training_metrics(results: dict) -> dict:
    best = next(e for e in results["epochs"] if e["epoch"] == results["best_epoch"])
    return {
        "best_epoch": results["best_epoch"],
        "epochs_run": len(results["epochs"]),
        "validation": best["validation"],
        "test": results["test"],
        "train_label_counts": results.get("train_label_counts"),
        "class_weight": results.get("class_weight"),
    }


# === CLI ===


def define_flags():
    flags.DEFINE_string("run_dir", None, "A bert_keras run directory (its best checkpoint).")
    flags.DEFINE_string(
        "export_base",
        None,
        "Where models go, as `<export_base>/<model_name>/<version>`. Default: `<run_dir>/export`.",
    )
    flags.DEFINE_string(
        "model_name",
        None,
        "The model's name under --export_base (TF Serving's MODEL_NAME). "
        "Default: the run's --export_name, else the data set's name.",
    )
    flags.mark_flag_as_required("run_dir")


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    f = flags.FLAGS
    path = exit_on_usage_error(
        from_run,
        Path(f.run_dir),
        Path(f.export_base) if f.export_base else None,
        f.model_name or None,
    )
    print(path)


if __name__ == "__main__":
    define_flags()
    app.run(main)
