"""End to end through the CLI, on the tiny BERT and on the embedded model."""

import json
import math
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from conftest import emotion_rows, free_port, hugging_face_inputs, run_cli, tiny_train_args
from sklearn.metrics import f1_score

from bert_keras import checkpoint, model, tokenize
from bert_keras.errors import UsageError
from bert_keras.rundir import RunDir

METRIC_KEYS = {"accuracy", "micro_f1", "macro_f1", "per_class_f1", "loss", "examples"}
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_run_directory_is_complete(tiny_run):
    m = _metrics(tiny_run)
    assert (tiny_run / "labels.txt").read_text().split() == LABELS
    assert (tiny_run / "checkpoints" / "best.weights.h5").stat().st_size > 0
    assert (tiny_run / "logs" / "training.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert list((tiny_run / "logs" / "validation").glob("events.out.tfevents.*"))
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    for epoch in m["epochs"]:
        assert set(epoch["validation"]) >= METRIC_KEYS
        assert epoch["validation"]["examples"] == 64
        assert math.isfinite(epoch["train"]["loss"])
    test = m["test"]
    assert set(test) >= METRIC_KEYS
    assert test["examples"] == 2000  # the whole test split, the last partial batch included
    assert list(test["per_class_f1"]) == LABELS
    assert abs(test["micro_f1"] - test["accuracy"]) < 1e-9  # single-label: they agree
    speed = m["speed"]
    assert speed["training_seconds"] > 0 and speed["training_examples_per_second"] > 0
    assert speed["real_tokens_per_second"] > speed["training_examples_per_second"]
    assert speed["peak_memory_mb"] > 100
    assert {"tensorflow", "keras", "keras-hub", "transformers"} <= set(m["versions"])
    export = tiny_run / "export" / "emotion" / "1"
    assert (export / "saved_model.pb").is_file()
    # float32 weights only, no optimizer state
    weights_bytes = sum(f.stat().st_size for f in (export / "variables").iterdir())
    assert m["parameters"] * 4 <= weights_bytes < m["parameters"] * 4 * 1.1
    assert (export / "assets" / "labels.txt").read_text().split() == LABELS
    assert json.loads((export / "assets" / "bert_keras.json").read_text())["max_seq_length"] == 64
    assert m["export"] == str(export)


def test_a_run_learns_beyond_the_majority_class(learned_run):
    """Mean pooling, end to end: test accuracy well above always answering the commonest
    label (joy: 695 of the 2,000 test rows)."""
    labels = [r["label"] for r in emotion_rows("test", 2000)]
    majority = max(np.bincount(labels)) / len(labels)
    m = _metrics(learned_run)
    assert "--pooling=mean\n" in (learned_run / "run.flags").read_text()
    assert m["test"]["examples"] == 2000
    assert m["test"]["accuracy"] > majority + 0.1, (m["test"]["accuracy"], majority)


def best_predictions(run, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's labels, and the predictions of the run's best.weights.h5 on it, computed here:
    the Hugging Face tokenizer, padded in numpy, the weights file in a fresh classifier."""
    run_dir = RunDir(run)
    rows = emotion_rows(split, 2000)
    texts = [r["text"] for r in rows]
    encoder = run_dir.config().encoder
    inputs = hugging_face_inputs(encoder.model, texts, encoder.max_seq_length)
    logits = run_dir.load_classifier().predict(inputs, batch_size=500, verbose=0)
    return np.array([r["label"] for r in rows]), logits.argmax(-1)


def test_best_checkpoint_is_the_best_epoch(learned_run):
    """The weights file itself gives the best epoch's validation figure, and no other epoch's
    was higher."""
    m = _metrics(learned_run)
    scores = [e["validation"]["micro_f1"] for e in m["epochs"]]
    assert len(set(scores)) > 1  # the epochs differ: picking one means something
    assert m["best_epoch"] == 1 + scores.index(max(scores))
    labels, predicted = best_predictions(learned_run, "validation")
    assert f1_score(labels, predicted, average="micro") == pytest.approx(max(scores), abs=2e-3)


def _tree(folder):
    """Every file under a folder with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_finished_run_rerun_says_so_and_changes_nothing(tiny_run, tiny_bert):
    flags = (tiny_run / "run.flags").read_text().splitlines()
    assert "--max_train_examples=400" in flags and "--dropout=0.0" in flags
    before = _tree(tiny_run)
    # The same command, and the flagfile the run wrote: both find it finished.
    for args in (
        tiny_train_args(tiny_bert, tiny_run, "--dropout=0"),
        [f"--flagfile={tiny_run / 'run.flags'}"],
    ):
        result = run_cli("bert_keras.train", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "holds a finished run of these flags" in result.stdout
        assert "nothing to do" in result.stdout and "--overwrite" in result.stdout
        assert "Epoch" not in result.stdout
    assert _tree(tiny_run) == before
    # Other flags: refused, still untouched.
    result = run_cli("bert_keras.train", f"--flagfile={tiny_run / 'run.flags'}", "--seed=3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --output_dir={tiny_run} holds a finished run with other flags (--seed=3 (was "
        f"42)); pass --overwrite to replace it, or choose another --output_dir."
    )
    assert _tree(tiny_run) == before


def test_a_damaged_metrics_json_is_one_line_and_nothing_changes(tiny_run, tmp_path):
    """It counted as finished, then rerunning the command was a JSONDecodeError (issue 34)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").write_text('{"dataset": "emo')  # cut short
    before = _tree(run)
    config = RunDir(run).config()  # its flags as they are (--output_dir: the original)
    with pytest.raises(UsageError, match=r"metrics.json is damaged \(JSONDecodeError: ") as e:
        RunDir(run).check(config, has_backup=False)
    assert "put back a copy of metrics.json, or pass --overwrite" in str(e.value)
    assert "\n" not in str(e.value) and _tree(run) == before


def test_same_seed_same_metrics(tiny_run, tiny_bert, tmp_path):
    """Also: tracking changes nothing learned, and a tracking server that cannot be reached (a
    closed port) is a warning, then the run goes on (tiny_run reported to MLflow and W&B)."""
    again = tmp_path / "again"
    closed = f"http://127.0.0.1:{free_port()}"
    args = tiny_train_args(tiny_bert, again, "--dropout=0", "--report_to=mlflow")
    result = run_cli("bert_keras.train", *args, MLFLOW_TRACKING_URI=closed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: mlflow is not reachable (ConnectionRefusedError: " in result.stdout
    assert not (again / "tracking.json").exists()
    first, second = _metrics(tiny_run), _metrics(again)
    assert [e["validation"] for e in first["epochs"]] == [e["validation"] for e in second["epochs"]]
    assert first["test"] == second["test"]


def step_losses(run_dir) -> list[float]:
    """The loss of every training step, in step order (logs/steps.csv)."""
    rows = (run_dir / "logs" / "steps.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,loss"
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert steps == list(range(1, len(steps) + 1))  # none repeated, none skipped
    return [float(r.split(",")[2]) for r in rows[1:]]


def test_mirrored_two_cpu_devices_matches_one_device(tiny_run, tiny_bert, tmp_path):
    """keras-team/keras#21061 (NaN loss under MirroredStrategy on recent Keras): 50 steps on 2
    logical CPU devices, dropout off, equal the single-device run step by step."""
    mirrored = tmp_path / "mirrored"
    args = tiny_train_args(
        tiny_bert, mirrored, "--dropout=0", "--strategy=mirrored", "--num_cpu_devices=2"
    )
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout
    one, two = _metrics(tiny_run), _metrics(mirrored)
    assert two["speed"]["replicas"] == 2
    single, mirror = step_losses(tiny_run), step_losses(mirrored)
    assert len(mirror) == 50
    assert all(math.isfinite(loss) for loss in mirror)
    np.testing.assert_allclose(mirror, single, rtol=1e-4)
    for a, b in zip(one["epochs"], two["epochs"], strict=True):
        assert math.isclose(a["train"]["loss"], b["train"]["loss"], rel_tol=1e-4)
        assert math.isclose(a["validation"]["loss"], b["validation"]["loss"], rel_tol=1e-4)


def test_gradient_accumulation_equals_the_whole_batch(tiny_run, tiny_bert, tmp_path):
    """Batches of 16 as 4 micro-batches of 4 (2 rows on each of 2 replicas), dropout off: the
    same 50 updates as the batches whole on one device, fused AdamW, warmup and clipping
    included."""
    accumulated = tmp_path / "accumulated"
    args = tiny_train_args(
        tiny_bert,
        accumulated,
        "--dropout=0",
        "--gradient_accumulation_steps=4",
        "--strategy=mirrored",
        "--num_cpu_devices=2",
    )
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    whole, micro = step_losses(tiny_run), step_losses(accumulated)
    assert len(micro) == 50  # a row per update, not per micro-batch
    np.testing.assert_allclose(micro, whole, rtol=1e-5)
    one, four = _metrics(tiny_run), _metrics(accumulated)
    for a, b in zip(one["epochs"], four["epochs"], strict=True):
        assert a["step"] == b["step"]
        assert math.isclose(a["validation"]["loss"], b["validation"]["loss"], rel_tol=1e-5)


def test_bfloat16_training_exports_a_float32_model(tiny_bert, tmp_path):
    """16-bit compute in training only: the SavedModel computes in float32, like a float32 rebuild
    of the best checkpoint."""
    run = tmp_path / "bf16"
    args = tiny_train_args(tiny_bert, run, "--dropout=0", "--mixed_precision=bfloat16")
    result = run_cli("bert_keras.train", *args, "--epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    m = _metrics(run)
    assert m["speed"]["policy"] == "mixed_bfloat16"
    assert math.isfinite(m["epochs"][0]["train"]["loss"])

    keras.mixed_precision.set_global_policy("float32")
    ckpt = checkpoint.resolve(str(tiny_bert), 64)
    classifier = model.build_classifier(ckpt.family, model.load_backbone(ckpt, 0.0), 6, "cls", 0.0)
    classifier.load_weights(str(run / "checkpoints" / "best.weights.h5"))
    assert {w.dtype for w in classifier.weights} == {"float32"}
    texts = ["i feel great", "this is awful", "i am so scared of the dark"]
    tokens = tokenize.load_tokenizer(ckpt)(texts, padding=True, return_tensors="np")
    want = tf.nn.softmax(
        classifier(
            {
                "token_ids": tokens["input_ids"].astype("int32"),
                "segment_ids": tokens["token_type_ids"].astype("int32"),
                "padding_mask": tokens["attention_mask"].astype("int32"),
            }
        )
    ).numpy()
    serve = tf.saved_model.load(str(run / "export" / "emotion" / "1")).signatures["serving_default"]
    got = serve(text=tf.constant(texts))["probabilities"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)  # bfloat16 compute would be ~1e-2 apart


def test_first_step_time_is_recorded(tiny_run):
    speed = _metrics(tiny_run)["speed"]
    assert 0 < speed["seconds_to_first_step"] < 600
    assert speed["policy"] == "float32"
