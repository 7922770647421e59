"""The SavedModel answers raw text, alone: TensorFlow and TF Text only, in a fresh process."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from conftest import REPO, hugging_face_inputs, run_cli
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from bert_keras import api, checkpoint, data, exporting, hub_folder, model, pipeline, tokenize
from bert_keras.errors import UsageError

# Loads the export with nothing of ours, the two ways servers do: TF2's object loader, and a
# TF1 session that restores the variables by name and runs the signature's tensors (TF Serving's
# C++ loader; it fails where the object loader does not, see serving.module.TextClassifier).
# TF Text's op libraries are loaded directly: its Python package imports Keras, and TF Serving
# has neither.
SERVE_ALONE = r"""
import glob, importlib.util, json, os, sys
import numpy as np
import tensorflow as tf
tf_text = importlib.util.find_spec("tensorflow_text").submodule_search_locations[0]
for library in sorted(glob.glob(os.path.join(tf_text, "python", "ops", "_*.so"))):
    tf.load_op_library(library)
export_dir, texts_file, out_file = sys.argv[1:]
texts = json.load(open(texts_file))
batches = [texts[i : i + 256] for i in range(0, len(texts), 256)]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
objects = np.concatenate([serve(text=tf.constant(b))["probabilities"].numpy() for b in batches])
with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    signature = graph.signature_def["serving_default"]
    fetch, feed = signature.outputs["probabilities"].name, signature.inputs["text"].name
    by_session = np.concatenate([session.run(fetch, {feed: b}) for b in batches])
np.savez(out_file, objects=objects, session=by_session)
ours = ("bert_keras", "keras", "keras_hub", "transformers", "datasets", "tensorflow_text")
print(json.dumps({
    "imported": sorted(m for m in ours if m in sys.modules),
    "importable": sorted(m for m in ours[:-1] if importlib.util.find_spec(m)),
    "tensorflow": tf.__version__,
}))
"""


def serve_alone(python, export_dir, texts, tmp_path) -> tuple[dict, dict]:
    """Runs SERVE_ALONE with `python` outside the repository; returns its report and outputs."""
    texts_file, out_file = tmp_path / "texts.json", tmp_path / "probabilities.npz"
    texts_file.write_text(json.dumps(texts))
    result = subprocess.run(
        [str(python), "-c", SERVE_ALONE, str(export_dir), str(texts_file), str(out_file)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # bert_keras is not importable from here
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # tf.saved_model.load imports Keras when it is installed; nothing else of ours may load.
    assert set(report["imported"]) <= {"keras"}
    return report, dict(np.load(out_file))


@pytest.fixture(scope="module")
def export_dir(tiny_run):
    return tiny_run / "export" / "emotion" / "1"


def test_signatures(export_dir):
    loaded = tf.saved_model.load(str(export_dir))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["text"]
    assert set(serve.structured_outputs) == {"probabilities", "label_id", "label"}
    out = serve(text=tf.constant(["i feel great", "this is awful", ""]))
    assert out["probabilities"].shape == (3, 6)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    labels = (export_dir / "assets" / "labels.txt").read_text().split("\n")
    assert [labels[i] for i in out["label_id"].numpy()] == [
        s.decode() for s in out["label"].numpy()
    ]
    by_ids = loaded.signatures["serve_token_ids"]
    assert set(by_ids.structured_input_signature[1]) == {"token_ids", "segment_ids", "padding_mask"}
    for name, spec in by_ids.structured_input_signature[1].items():
        assert (spec.dtype, spec.shape.as_list()) == (tf.int32, [None, None]), name
    text = serve.structured_input_signature[1]["text"]
    assert (text.dtype, text.shape.as_list()) == (tf.string, [None])
    for signature in (serve, by_ids):
        outputs = {k: (v.dtype, v.shape.as_list()) for k, v in signature.structured_outputs.items()}
        assert outputs == {
            "probabilities": (tf.float32, [None, 6]),
            "label_id": (tf.int32, [None]),
            "label": (tf.string, [None]),
        }


def test_serve_token_ids_answers_hugging_face_ids_as_serving_default_answers_text(
    export_dir, tiny_bert
):
    texts = [*data.load("emotion").splits["test"]["text"][:62], "", "Café déjà vu 😀"]
    loaded = tf.saved_model.load(str(export_dir))
    by_text = loaded.signatures["serving_default"](text=tf.constant(texts))
    by_ids = loaded.signatures["serve_token_ids"](**hugging_face_inputs(tiny_bert, texts, 64))
    np.testing.assert_allclose(by_ids["probabilities"], by_text["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(by_ids["label"], by_text["label"])


def test_export_matches_in_process_model_on_test_split(tiny_run, tiny_bert, export_dir, tmp_path):
    flags = dict(
        line.removeprefix("--").split("=", 1)
        for line in (tiny_run / "run.flags").read_text().splitlines()
        if "=" in line
    )
    max_seq_length = int(flags["max_seq_length"])
    labeled = data.load("emotion")
    texts = labeled.splits["test"]["text"][:]

    # In process: the Keras model from the best checkpoint, on Hugging Face tokens.
    ckpt = checkpoint.resolve(str(tiny_bert), max_seq_length)
    backbone = model.load_backbone(ckpt, 0.0)
    classifier = model.build_classifier(ckpt.family, backbone, 6, flags["pooling"], 0.0)
    classifier.load_weights(str(tiny_run / "checkpoints" / "best.weights.h5"))
    tokens = tokenize.tokenize(labeled.splits, tokenize.load_tokenizer(ckpt), max_seq_length)
    test_ds, _ = pipeline.eval_dataset(tokens["test"], 64, max_seq_length)
    order = np.argsort(pipeline.lengths(tokens["test"]), kind="stable")
    want = np.empty((len(texts), 6), np.float32)
    want[order] = tf.nn.softmax(classifier.predict(test_ds, verbose=0)).numpy()

    # In a fresh process with TensorFlow and TF Text's ops only, through both loaders.
    _, got = serve_alone(sys.executable, export_dir, texts, tmp_path)
    for probabilities in got.values():
        assert probabilities.shape == (2000, 6)
        assert (probabilities.argmax(axis=1) == want.argmax(axis=1)).all()
        np.testing.assert_allclose(probabilities, want, atol=1e-5)


def test_tf_serving_2_20_runtime_predicts_the_same(export_dir, serving_runtime, tmp_path):
    """TensorFlow 2.20 + TF Text 2.20 (TF Serving 2.20's runtime), Keras not even installed."""
    texts = data.load("emotion").splits["test"]["text"][:]
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    want = np.concatenate(
        [serve(text=tf.constant(texts[i : i + 256]))["probabilities"] for i in range(0, 2000, 256)]
    )
    report, got = serve_alone(serving_runtime, export_dir, texts, tmp_path)
    assert report["tensorflow"].startswith("2.20.")
    assert report["importable"] == [] and report["imported"] == []
    for probabilities in got.values():
        assert (probabilities.argmax(axis=1) == want.argmax(axis=1)).all()
        np.testing.assert_allclose(probabilities, want, atol=1e-5)


def export_ops(export_dir: Path) -> set[str]:
    """Every op in a SavedModel's graph and its function library."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    ops = set()
    for graph in saved_model.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for function in graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    return ops


def allowed_ops(tokenizer: str = "wordpiece") -> set[str]:
    """tests/serving_ops.txt: ops TF Serving runs; a tokenizer's own in serving_ops_<kind>.txt."""
    allowed = set()
    for name in ("serving_ops.txt", f"serving_ops_{tokenizer}.txt"):
        path = Path(__file__).parent / name
        if path.is_file():
            lines = path.read_text().splitlines()
            allowed |= {x.strip() for x in lines if x.strip() and not x.startswith("#")}
    return allowed


def test_graph_uses_only_allowlisted_ops(export_dir):
    """Every op in the graph and its function library is one TF Serving can run."""
    ops, allowed = export_ops(export_dir), allowed_ops()
    assert {"NormalizeUTF8", "FastWordpieceTokenizeWithOffsets"} <= ops
    assert "FastBertNormalize" not in ops  # its normaliser is not Hugging Face's (issue 29)
    assert not any("RoundRobin" in op for op in ops)
    assert ops <= allowed, f"ops outside tests/serving_ops.txt: {sorted(ops - allowed)}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_cli_writes_the_next_version_and_keeps_the_old(tiny_run, tiny_bert, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    first = run / "export" / "emotion" / "1" / "saved_model.pb"
    before = _sha256(first)
    result = run_cli("bert_keras.export", f"--run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(run / "export" / "emotion" / "2")
    assert _sha256(first) == before
    assert sorted(p.name for p in (run / "export" / "emotion").iterdir()) == ["1", "2"]

    info = json.loads((run / "export" / "emotion" / "2" / "assets" / "bert_keras.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert info["training"]["finished"] is True
    assert info["training"]["test"] == metrics["test"]
    assert info["training"]["best_epoch"] == metrics["best_epoch"]
    assert info["label_names"] == metrics["label_names"]
    assert info["max_seq_length"] == 64
    # The training tokenizer's vocabulary: the model folder's vocab.txt, one token a line.
    training_vocab = (tiny_bert / "vocab.txt").read_text().splitlines()
    assert info["vocab_sha256"] == hashlib.sha256("\n".join(training_vocab).encode()).hexdigest()
    exported = (run / "export" / "emotion" / "2" / "assets" / "vocab.txt").read_text()
    assert exported.splitlines() == training_vocab
    assert info["versions"]["training"] == metrics["versions"]
    assert info["versions"]["export"]["tensorflow"] == tf.__version__


def test_export_never_replaces_a_version(tiny_run, tmp_path):
    """Another writer's version 1 and 2 stay; a stray temporary folder does not count."""
    base = tmp_path / "models"
    (base / "mine" / "1").mkdir(parents=True)
    (base / "mine" / "1" / "keep").write_text("another model")
    (base / "mine" / ".tmp-crashed").mkdir()
    path = exporting.from_run(tiny_run, export_base=base, model_name="mine")["savedmodel"]
    assert path == base / "mine" / "2"
    assert (base / "mine" / "1" / "keep").read_text() == "another model"
    assert (path / "saved_model.pb").is_file()
    assert sorted(p.name for p in (base / "mine").iterdir()) == [".tmp-crashed", "1", "2"]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda tmp, run: tmp / "nowhere", "no such directory"),
        (lambda tmp, run: tmp, "not a bert_keras run directory"),
        (lambda tmp, run: _without_checkpoint(run, tmp), "has no checkpoints/best.weights.h5"),
    ],
)
def test_export_cli_bad_run_dir(tiny_run, tmp_path, make, expected):
    run_dir = make(tmp_path, tiny_run)
    with pytest.raises(UsageError, match=expected) as raised:
        exporting.from_run(run_dir)
    assert "\n" not in str(raised.value)
    assert not (run_dir / "export").exists() or run_dir == tiny_run


def _without_checkpoint(tiny_run: Path, tmp: Path) -> Path:
    run = tmp / "unfinished"
    run.mkdir()
    for name in ("run.flags", "labels.txt"):
        shutil.copy(tiny_run / name, run / name)
    return run


def test_a_format_the_run_cannot_take_is_refused_before_anything_is_written(learned_run, tmp_path):
    with pytest.raises(UsageError, match="this run pooled the mean of all tokens"):
        api.export(learned_run, tmp_path, format="hf")
    with pytest.raises(UsageError, match="format litert: bert_keras exports savedmodel, hf, onnx"):
        api.export(learned_run, tmp_path, format=["savedmodel", "litert"])
    assert not any(tmp_path.iterdir())
    preset = checkpoint.Checkpoint("bert_tiny_en_uncased", "bert_tiny_en_uncased", {}, "")
    with pytest.raises(UsageError, match="is a keras-hub preset, with no Hugging Face checkpoint"):
        hub_folder.check(preset, "cls")


def test_export_cli_says_what_is_wrong_in_one_line(tmp_path):
    result = run_cli("bert_keras.export", f"--run_dir={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --run_dir=")


def test_warmup_requests_replay_through_their_signatures(export_dir):
    """TF Serving reads assets.extra/tf_serving_warmup_requests as TFRecords of PredictionLog."""
    loaded = tf.saved_model.load(str(export_dir))
    path = export_dir / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == 3
    signatures, sizes = [], []
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.name == "emotion"
        signatures.append(request.model_spec.signature_name)
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        rows = next(iter(inputs.values())).shape[0]
        assert out["probabilities"].shape == (rows, 6)
        sizes.append(rows)
    assert signatures == ["serving_default", "serving_default", "serve_token_ids"]
    assert sizes == [1, 8, 8]  # one text, a batch, a batch of ids


def test_docs_saved_model_cli_command_runs(export_dir):
    """docs/serving.md's `saved_model_cli run` line, on this export."""
    readme = (REPO / "docs" / "serving.md").read_text()
    command = next(
        line for line in readme.splitlines() if "saved_model_cli" in line and " run " in line
    )
    command = command.replace("runs/emotion/export/emotion/1", str(export_dir))
    result = subprocess.run(
        command,
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        executable="/bin/bash",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Result for output key label:" in result.stdout
    assert "Result for output key probabilities:" in result.stdout


def test_a_model_name_outside_its_folder_is_refused_before_any_work(tiny_run):
    """`--model_name=../x` (and the trainer's `--export_name`) wrote outside export/ (issue 34)."""
    from bert_keras import exporting
    from bert_keras.errors import UsageError

    for name in ("../x", ".tmp-x", "a/b"):
        with pytest.raises(UsageError, match=f"--model_name={re.escape(name)} must be a folder"):
            exporting.from_run(tiny_run, model_name=name)
    assert not (tiny_run / "x").exists() and not (tiny_run / "export" / "a").exists()
