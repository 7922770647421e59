"""`python -m bert_keras.predict`: texts in, one JSON line per text out; bad input, one line."""

import json
import shutil

import pytest
from conftest import run_cli

from bert_keras.predict import Predictor

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
    want = Predictor(export_dir)(texts)
    assert [r["text"] for r in rows] == texts
    for row, expected in zip(rows, want, strict=True):
        assert set(row) == {"text", "label", "label_id", "probabilities"}
        assert list(row["probabilities"]) == LABELS
        assert row["label"] == LABELS[row["label_id"]] == expected["label"]
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        for name in LABELS:
            assert abs(row["probabilities"][name] - expected["probabilities"][name]) < 1e-5


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
        (lambda e, t: [f"--export_dir={t}", "hi"], "holds no SavedModel"),
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
