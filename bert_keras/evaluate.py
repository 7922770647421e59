"""Evaluate a run's best checkpoint, or an export, on a split, and write the reports.

    python -m bert_keras.evaluate --run_dir=runs/emotion [--split=test] [--dataset=...]
    python -m bert_keras.evaluate --export_dir=runs/emotion/export/emotion/1 [--split=validation]

Reports (`report.write`) go to `--report_dir`, by default `<run_dir>/reports/<split>` (for an
export, the run directory it records; else `./reports/<model name>-<version>-<split>`). The
trainer writes `<run_dir>/reports/test` itself at the end of a run. `--dataset` evaluates on
another data set with the same labels (same column flags as the run unless given).
"""

import json
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from bert_keras import rundir
from bert_keras.data import SPLITS
from bert_keras.errors import UsageError, exit_on_usage_error


def from_run(run_dir: Path, split: str, dataset: str | None, report_dir: Path | None) -> Path:
    from bert_keras import checkpoint, metrics, model, pipeline, report, tokenize

    run_flags = rundir.read_flags(run_dir)
    if not (run_dir / rundir.BEST_WEIGHTS).is_file():
        raise UsageError(
            f"--run_dir={run_dir} has no {rundir.BEST_WEIGHTS} (no epoch finished); train it first."
        )
    label_names = rundir.read_labels(run_dir)
    labeled = _load(dataset or run_flags["dataset"], run_flags, label_names, split)
    max_len = int(run_flags["max_seq_length"])
    ckpt = checkpoint.resolve(run_flags["model"], max_len)
    # Only the split evaluated: a test report need not tokenize the training rows.
    tokens = tokenize.tokenize(
        {split: labeled.splits[split]}, tokenize.load_tokenizer(ckpt), max_len
    )
    classifier = model.load_best(run_dir, ckpt, run_flags["pooling"], len(label_names))
    ds, y_true = pipeline.eval_dataset(tokens[split], 64, max_len)
    logits = metrics.predict(classifier, ds, y_true)
    finished = run_dir / rundir.FINISHED
    epochs = json.loads(finished.read_text())["epochs"] if finished.is_file() else None
    about = {
        "model": ckpt.name,
        "dataset": labeled.name,
        "split": split,
        "source": f"the best checkpoint of {run_dir}",
        "flags": run_flags,
    }
    folder = report_dir or run_dir / "reports" / split
    report.write(folder, y_true, logits, label_names, about, epochs, run_dir / "logs/steps.csv")
    return folder


def from_export(export_dir: Path, split: str, dataset: str | None, report_dir: Path | None):
    from bert_keras import predict, report

    export_dir = predict.find_export(export_dir)
    predictor = predict.Predictor(export_dir)
    info = predictor.info
    run_flags = info["training"]["flags"]
    labeled = _load(dataset or info["dataset"], run_flags, predictor.label_names, split)
    rows = labeled.splits[split]
    probabilities = np.concatenate(
        [
            predictor.probabilities(batch["text"], batch.get("text_pair"))
            for batch in rows.iter(batch_size=64)
        ]
    )
    run_dir = Path(info["training"]["run_dir"])
    folder = report_dir or (
        run_dir / "reports" / split
        if (run_dir / rundir.MARKER).is_file()
        else Path("reports") / f"{export_dir.parent.name}-{export_dir.name}-{split}"
    )
    about = {
        "model": info["model"],
        "dataset": labeled.name,
        "split": split,
        "source": f"the SavedModel {export_dir}",
        "flags": run_flags,
    }
    logits = np.log(np.maximum(probabilities, 1e-30))
    report.write(folder, np.asarray(rows["label"]), logits, predictor.label_names, about)
    return folder


def _load(dataset: str, run_flags: dict, label_names: list[str], split: str):
    from bert_keras import data

    labeled = data.load(
        dataset,
        run_flags.get("text_column", "text"),
        run_flags.get("label_column", "label"),
        max_eval_examples=int(run_flags.get("max_eval_examples", 0)) if split != "test" else 0,
        text_pair_column=run_flags.get("text_pair_column", ""),
        label_names=run_flags.get("label_names", ""),
        validation_fraction=float(run_flags.get("validation_fraction", 0.1)),
        seed=int(run_flags.get("seed", 42)),
    )
    if labeled.label_names != label_names:
        raise UsageError(
            f"--dataset={dataset} has the labels {labeled.label_names}, the model "
            f"{label_names}; evaluate on a data set with the model's labels."
        )
    return labeled


def define_flags():
    flags.DEFINE_string("run_dir", None, "A bert_keras run directory: its best checkpoint.")
    flags.DEFINE_string(
        "export_dir", None, "Or a SavedModel (version folder, model folder or run directory)."
    )
    flags.DEFINE_enum("split", "test", list(SPLITS), "The split to evaluate.")
    flags.DEFINE_string(
        "dataset", None, "Evaluate on this data set instead of the run's (same labels)."
    )
    flags.DEFINE_string("report_dir", None, "Where the reports go (see the module's doc).")


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    f = flags.FLAGS

    def run():
        if bool(f.run_dir) == bool(f.export_dir):
            raise UsageError("give one of --run_dir (a training run) or --export_dir (an export).")
        report_dir = Path(f.report_dir) if f.report_dir else None
        if f.run_dir:
            return from_run(Path(f.run_dir), f.split, f.dataset, report_dir)
        return from_export(Path(f.export_dir), f.split, f.dataset, report_dir)

    folder = exit_on_usage_error(run)
    print((folder / "REPORT.md").read_text())
    print(f"Reports in {folder}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
