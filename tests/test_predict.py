"""`python -m bert_keras.predict`: texts in, one JSON line per text out; bad input, one line."""

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from conftest import REPO, emotion_rows, reap, run_cli, run_python

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


@pytest.fixture(scope="module")
def export_dir(tiny_run):
    return tiny_run / "export" / "emotion" / "1"


def _rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_texts_as_arguments(export_dir):
    texts = ["i feel great", "this is awful", "crème brûlée 😀"]
    result = run_cli("bert_keras.predict", f"--export_dir={export_dir.parent}", *texts)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(result.stdout)
    want = _signature(export_dir, texts)  # the SavedModel called directly, not the CLI's class
    assert [r["text"] for r in rows] == texts
    for i, row in enumerate(rows):
        assert set(row) == {"text", "label", "label_id", "probabilities"}
        assert list(row["probabilities"]) == LABELS
        assert row["label"] == LABELS[row["label_id"]] == want["label"][i].decode()
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        got = [row["probabilities"][name] for name in LABELS]
        np.testing.assert_allclose(got, want["probabilities"][i], atol=1e-6)


def _signature(export_dir, texts) -> dict:
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(text=tf.constant(texts)).items()}


def test_the_newest_version_answers(tiny_run, learned_run, tmp_path):
    """A run directory, or its model folder, with versions 1 and 2 (another model): the CLI
    answers with version 2."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("backup", "logs", "reports"))
    versions = run / "export" / "emotion"
    shutil.copytree(learned_run / "export" / "emotion" / "1", versions / "2")
    texts = [r["text"] for r in emotion_rows("test", 40)]
    want = _signature(versions / "2", texts)["probabilities"]
    older = _signature(versions / "1", texts)["probabilities"]
    assert np.abs(want - older).max() > 0.05  # the two versions answer differently
    for given in (run, versions):
        result = run_cli("bert_keras.predict", f"--export_dir={given}", *texts)
        assert result.returncode == 0, result.stderr[-3000:]
        got = [[r["probabilities"][name] for name in LABELS] for r in _rows(result.stdout)]
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_standard_input_is_answered_a_batch_at_a_time(export_dir):
    """The first batch's answers arrive while standard input is still open (a pipe from a
    producer that has not finished): the input is streamed, not read whole first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bert_keras.predict", f"--export_dir={export_dir}"]
        + ["--input_file=-", "--batch_size=4"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    timer = threading.Timer(180, proc.kill)  # a CLI that waits for the end of input: killed
    timer.start()
    try:
        proc.stdin.write("i feel great\n" * 4)
        proc.stdin.flush()
        first = [json.loads(proc.stdout.readline()) for _ in range(4)]
        assert proc.poll() is None  # answered, still reading
        proc.stdin.write("this is awful\n")
        proc.stdin.close()
        rest = proc.stdout.read().splitlines()
        assert proc.wait() == 0
    finally:
        timer.cancel()
        reap(proc)
    assert [r["text"] for r in first] == ["i feel great"] * 4
    assert [json.loads(line)["text"] for line in rest] == ["this is awful"]


def test_input_file_streams_every_line_in_batches(export_dir, tmp_path):
    lines = [b"i feel great", b"", b"bad \xff bytes", b"windows line\r"] * 10
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"\n".join(lines) + b"\n")
    result = run_cli(
        "bert_keras.predict",
        f"--export_dir={export_dir}",
        f"--input_file={texts}",
        "--batch_size=7",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(result.stdout)
    assert len(rows) == 40
    assert [r["text"] for r in rows[:4]] == ["i feel great", "", "bad \ufffd bytes", "windows line"]
    assert rows[0] == rows[4] and rows[1] == rows[5]


def test_stdin(export_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("i feel great\nthis is awful\n")
    with open(texts) as stdin:
        result = run_cli(
            "bert_keras.predict", f"--export_dir={export_dir}", "--input_file=-", stdin=stdin
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["text"] for r in _rows(result.stdout)] == ["i feel great", "this is awful"]


def _foreign_saved_model(export_dir, tmp_path):
    """A SavedModel that bert_keras did not write: no assets/bert_keras.json."""
    foreign = tmp_path / "foreign" / "1"
    shutil.copytree(export_dir, foreign)
    (foreign / "assets" / "bert_keras.json").unlink()
    return foreign


@pytest.mark.parametrize(
    "args, expected",
    [
        (lambda e, t: [f"--export_dir={t / 'nowhere'}", "hi"], "no such directory"),
        (lambda e, t: [f"--export_dir={t}", "hi"], "holds no export"),
        (
            lambda e, t: [f"--export_dir={_foreign_saved_model(e, t)}", "hi"],
            "not a bert_keras export",
        ),
        (
            lambda e, t: [f"--export_dir={e}", f"--input_file={_empty(t)}"],
            "is empty",
        ),
        (lambda e, t: [f"--export_dir={e}", f"--input_file={t / 'missing.txt'}"], "no such file"),
        (lambda e, t: [f"--export_dir={e}"], "give texts as arguments"),
    ],
    ids=["missing", "no_saved_model", "not_ours", "empty_file", "missing_file", "no_texts"],
)
def test_bad_input_is_one_error_line(export_dir, tmp_path, args, expected):
    result = run_cli("bert_keras.predict", *args(export_dir, tmp_path))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last
    assert result.stdout == ""


def _empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    return path


def test_predictor_runs_one_thread_per_op_and_an_op_per_core(export_dir):
    """docs/serving.md's threads, set by the Predictor in a fresh process."""
    script = (
        "import os, sys, tensorflow as tf\n"
        "from bert_keras.predict import Predictor\n"
        "Predictor(sys.argv[1])(['i feel great'])\n"
        "threads = tf.config.threading\n"
        "print(threads.get_intra_op_parallelism_threads(), "
        "threads.get_inter_op_parallelism_threads(), os.cpu_count())\n"
    )
    result = run_python("-c", script, str(export_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    intra, inter, cores = map(int, result.stdout.split())
    assert (intra, inter) == (1, cores)


def test_an_export_written_before_issue_29_is_still_served_unchanged():
    """Exports keep the tokenizer graph they were written with (FastBertTokenizer's, before
    issue 29): Predictor answers what that export answered when it was written."""
    from test_export import export_ops

    from bert_keras.predict import Predictor

    fixture = REPO / "tests" / "fixtures" / "export_before_issue_29"
    recorded = json.loads((fixture / "answers.json").read_text())
    assert "FastBertNormalize" in export_ops(fixture / "1")
    predictor = Predictor(fixture / "1")
    got = predictor.outputs(recorded["texts"])["probabilities"]
    np.testing.assert_allclose(got, recorded["probabilities"], rtol=0, atol=1e-6)
    assert [a["label"] for a in predictor(recorded["texts"])] == recorded["label"]
