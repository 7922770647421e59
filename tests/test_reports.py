"""Reports people look at: the trainer's reports/test, the evaluate CLI, the export's model card."""

import json
import re

import numpy as np
import pytest
from conftest import run_cli
from sklearn.metrics import confusion_matrix, f1_score
from test_train import best_predictions

PNG = b"\x89PNG\r\n\x1a\n"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG, path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_trainer_writes_reports_of_the_test_split(tiny_run):
    folder = tiny_run / "reports" / "test"
    m = json.loads((tiny_run / "metrics.json").read_text())
    for name in ("confusion_matrix.png", "per_class_f1.png", "training_curves.png"):
        width, height = _png_size(folder / name)
        assert width >= 600 and height >= 300, (name, width, height)
    per_class = json.loads((folder / "classification_report.json").read_text())
    assert [per_class[n]["f1-score"] for n in LABELS] == pytest.approx(
        list(m["test"]["per_class_f1"].values())
    )
    assert per_class["macro avg"]["f1-score"] == pytest.approx(m["test"]["macro_f1"])
    assert sum(per_class[n]["support"] for n in LABELS) == 2000
    text = (folder / "classification_report.txt").read_text()
    assert all(n in text for n in LABELS)
    report = (folder / "REPORT.md").read_text()
    assert f"| micro-F1 | {m['test']['micro_f1']:.4f} |" in report
    for picture in ("per_class_f1.png", "confusion_matrix.png", "training_curves.png"):
        assert f"]({picture})" in report
    assert "| `--learning_rate` | `0.001` |" in report  # the hyperparameters
    assert report.count("\n| 1 | ") == 1 and report.count("\n| 2 | ") == 1  # one row an epoch


def test_the_per_class_table_agrees_with_a_confusion_matrix_made_here(learned_run):
    """Recall, support and "most often mistaken for" against scikit-learn's confusion matrix
    of the best checkpoint's predictions, made by this test (a borderline text or two may
    differ: the run batches and pads the test split its own way)."""
    labels, predicted = best_predictions(learned_run, "test")
    cm = confusion_matrix(labels, predicted, labels=range(len(LABELS)))
    m = json.loads((learned_run / "metrics.json").read_text())
    for average in ("micro", "macro"):
        f1 = f1_score(labels, predicted, average=average)
        assert m["test"][f"{average}_f1"] == pytest.approx(f1, abs=2e-3), average
    report = (learned_run / "reports" / "test" / "REPORT.md").read_text().splitlines()
    start = report.index("| label | precision | recall | F1 | support | most often mistaken for |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report[start + 2 :]]
    assert [row[0] for row in rows[: len(LABELS)]] == LABELS
    for i, (name, _, recall, _, support, confused) in enumerate(rows[: len(LABELS)]):
        assert int(support) == cm[i].sum(), name
        assert float(recall) == pytest.approx(cm[i, i] / cm[i].sum(), abs=2e-3), name
        errors = np.delete(cm[i], i)
        other, count = confused.removesuffix(")").split(" (")
        assert abs(int(count) - errors.max()) <= 2, (name, confused, cm[i])
        assert cm[i, LABELS.index(other)] >= errors.max() - 2, (name, confused, cm[i])


def test_model_card_in_the_export(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    card = (tiny_run / "export" / "emotion" / "1" / "MODEL_CARD.md").read_text()
    assert ", ".join(LABELS) in card
    assert f"| macro-F1 | {m['test']['macro_f1']:.4f} |" in card
    for name, f1 in m["test"]["per_class_f1"].items():
        assert f"| F1 {name} | {f1:.4f} |" in card
    counts = m["train_label_counts"]
    rare = min(counts, key=counts.get)
    assert f"`{rare}` has {counts[rare]:,} training rows" in card
    assert "tensorflow " in card and "## Intended use and limits" in card


def test_evaluate_cli_from_the_run_and_from_the_export_agree(tiny_run, tmp_path):
    outputs = {}
    for name, source in (("run", "--run_dir"), ("export", "--export_dir")):
        path = tiny_run if name == "run" else tiny_run / "export" / "emotion"
        result = run_cli(
            "bert_keras.evaluate",
            f"{source}={path}",
            "--split=validation",
            f"--report_dir={tmp_path / name}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = result.stdout
    run_report, export_report = (
        json.loads((tmp_path / d / "classification_report.json").read_text())
        for d in ("run", "export")
    )
    # The same 64 validation rows (the run's --max_eval_examples), the same predictions.
    assert run_report["macro avg"]["support"] == 64
    assert run_report == export_report
    m = json.loads((tiny_run / "metrics.json").read_text())
    best = next(e for e in m["epochs"] if e["epoch"] == m["best_epoch"])
    assert run_report["accuracy"] == pytest.approx(best["validation"]["accuracy"])
    assert f"# {tiny_run_model(tiny_run)} on emotion: validation split" in outputs["run"]
    assert (tmp_path / "run" / "training_curves.png").is_file()
    assert not (tmp_path / "export" / "training_curves.png").exists()  # an export has no epochs


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "error: give one of --run_dir (a training run) or --export_dir (an export)."),
        (["--run_dir=/nonexistent"], "error: --run_dir=/nonexistent: no such directory"),
    ],
)
def test_evaluate_bad_input_is_one_error_line(args, expected):
    result = run_cli("bert_keras.evaluate", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(expected)


def test_a_report_dir_holding_the_run_or_other_files_is_refused(tiny_run, tmp_path):
    """`evaluate --run_dir=R --report_dir=R` once swapped the report into R's place and deleted
    the run. Refused before any work: the run (or export) itself, a folder above it, a folder of
    other files; nothing touched."""
    from test_train import _tree

    from bert_keras import evaluation
    from bert_keras.errors import UsageError

    before = _tree(tiny_run)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    export = tiny_run / "export" / "emotion" / "1"
    for source, report_dir, says in (
        ({"run_dir": tiny_run}, tiny_run, f"holds {tiny_run}, which the reports would replace"),
        ({"run_dir": tiny_run}, tiny_run.parent, f"holds {tiny_run}, which the reports"),
        ({"export_dir": export}, tiny_run, f"holds {export}, which the reports"),
        ({"run_dir": tiny_run}, other, "holds other files than a report"),
    ):
        with pytest.raises(UsageError, match=re.escape(says)):
            evaluation.evaluate(**source, report_dir=report_dir)
    assert _tree(tiny_run) == before
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_evaluate_on_a_data_set_with_other_labels_is_refused(tiny_run, tmp_path):
    from conftest import write_split_files

    rows = [{"text": f"text {i}", "label": ["x", "y"][i % 2]} for i in range(6)]
    write_split_files(tmp_path / "other", {s: rows for s in ("train", "validation", "test")})
    result = run_cli(
        "bert_keras.evaluate", f"--run_dir={tiny_run}", f"--dataset={tmp_path / 'other'}"
    )
    assert result.returncode == 2
    assert "has the labels ['x', 'y'], the model" in result.stderr.strip().splitlines()[-1]


def tiny_run_model(run_dir) -> str:
    return json.loads((run_dir / "metrics.json").read_text())["model"]


def test_tensorboard_gets_per_class_validation_f1(tiny_run):
    import tensorflow as tf

    tags = set()
    for events in (tiny_run / "logs" / "validation").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(events)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert {f"epoch_f1_{name}" for name in LABELS} | {"epoch_micro_f1", "epoch_macro_f1"} <= tags
