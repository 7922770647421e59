"""The SavedModel answers raw text, alone: TensorFlow and TF Text only, in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from tensorflow.core.protobuf import saved_model_pb2

from bert_keras import checkpoint, data, model, pipeline, tokenize

# Loads the export with nothing of ours: the runtime TF Serving has.
SERVE_ALONE = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401
export_dir, texts_file, out_file = sys.argv[1:]
texts = json.load(open(texts_file))
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
probabilities = np.concatenate(
    [serve(text=tf.constant(texts[i : i + 256]))["probabilities"].numpy()
     for i in range(0, len(texts), 256)]
)
np.save(out_file, probabilities)
leaked = sorted(m for m in ("bert_keras", "keras_hub", "transformers", "datasets")
                if m in sys.modules)
print(json.dumps({"leaked": leaked}))
"""


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
    classifier = model.build_classifier(model.load_backbone(ckpt, 0.0), 6, flags["pooling"], 0.0)
    classifier.load_weights(str(tiny_run / "checkpoints" / "best.weights.h5"))
    tokens = tokenize.tokenize(labeled.splits, tokenize.load_tokenizer(ckpt), max_seq_length)
    test_ds, _ = pipeline.eval_dataset(tokens["test"], 64, max_seq_length)
    order = np.argsort(pipeline.lengths(tokens["test"]), kind="stable")
    want = np.empty((len(texts), 6), np.float32)
    want[order] = tf.nn.softmax(classifier.predict(test_ds, verbose=0)).numpy()

    # In a fresh process with only tensorflow and tensorflow_text.
    texts_file, out_file = tmp_path / "texts.json", tmp_path / "probabilities.npy"
    texts_file.write_text(json.dumps(texts))
    result = subprocess.run(
        [sys.executable, "-c", SERVE_ALONE, str(export_dir), str(texts_file), str(out_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"leaked": []}
    got = np.load(out_file)
    assert got.shape == (2000, 6)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_graph_uses_only_allowlisted_ops(export_dir):
    """Every op in the graph and its function library is one TF Serving can run."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    ops = set()
    for graph in saved_model.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for function in graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    allowed = {
        line.strip()
        for line in (Path(__file__).parent / "serving_ops.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"FastBertNormalize", "FastWordpieceTokenizeWithOffsets"} <= ops
    assert not any("RoundRobin" in op for op in ops)
    assert ops <= allowed, f"ops outside tests/serving_ops.txt: {sorted(ops - allowed)}"
