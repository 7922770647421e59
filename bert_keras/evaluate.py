"""Evaluate a run's best checkpoint, or an export, on a split, and write the reports.

    python -m bert_keras.evaluate --run_dir=runs/emotion [--split=test] [--dataset=...]
    python -m bert_keras.evaluate --export_dir=runs/emotion/export/emotion/1 [--split=validation]

Reports (`report.write`) go to `--report_dir`, by default `<run_dir>/reports/<split>-<data set
name>` (for an export, the run directory it records; else
`./reports/<model name>-<version>-<split>`): never over `<run_dir>/reports/test`, which the
trainer writes itself at the end of a run. `--dataset` evaluates on
another data set with the same labels (same column flags as the run unless given).
"""

from pathlib import Path

import numpy as np
from absl import app, flags

from bert_keras import logs
from bert_keras.config import RunConfig
from bert_keras.data import SPLITS
from bert_keras.errors import UsageError, exit_on_usage_error, no_arguments, parse_flags
from bert_keras.rundir import RunDir
from bert_keras.task import Task


def from_run(run_dir: Path, split: str, dataset: str | None, report_dir: Path | None) -> Path:
    from bert_keras import metrics, pipeline, report, tokenize

    run = RunDir(run_dir)
    config, task = run.config(), run.task()
    run.best_checkpoint()  # before the data is read: a run without one fails fast
    labeled = _load(config, dataset, task, split)
    ckpt = run.checkpoint()
    # Only the split evaluated: a test report need not tokenize the training rows.
    tokens = tokenize.tokenize(
        {split: labeled.splits[split]}, tokenize.load_tokenizer(ckpt), config.max_seq_length
    )
    ds, y_true = pipeline.eval_dataset(
        tokens[split], 64, config.max_seq_length, inputs=ckpt.family.inputs
    )
    logits = metrics.predict(run.load_classifier(ckpt), ds, y_true)
    results = run.results()
    about = _about(ckpt.name, labeled, split, f"the best checkpoint of {run}", config)
    folder = report_dir or run.report_dir(split, labeled.name)
    epochs, thresholds = (results.epochs, results.thresholds) if results else (None, None)
    report.write(folder, y_true, logits, task, about, epochs, run.steps_csv, thresholds)
    return folder


def from_export(export_dir: Path, split: str, dataset: str | None, report_dir: Path | None):
    from bert_keras import data, predict, report

    export_dir = predict.find_export(export_dir)
    predictor = predict.Predictor(export_dir)
    info, task = predictor.info, predictor.task
    config = RunConfig.parse(f"--{k}={v}" for k, v in info["training"]["flags"].items())
    labeled = _load(config, dataset or info["dataset"], task, split)
    rows = labeled.splits[split]
    logits = np.concatenate(
        [
            _logits(predictor.outputs(batch["text"], batch.get("text_pair")), task)
            for batch in rows.iter(batch_size=64)
        ]
    )
    run = RunDir(info["training"]["run_dir"])
    folder = report_dir or (
        run.report_dir(split, labeled.name)
        if run.flags.is_file()
        else Path("reports") / f"{export_dir.parent.name}-{export_dir.name}-{split}"
    )
    about = _about(info["model"], labeled, split, f"the SavedModel {export_dir}", config)
    thresholds = info["training"].get("thresholds")
    report.write(folder, data.labels(rows), logits, task, about, thresholds=thresholds)
    return folder


def _logits(outputs: dict, task: Task) -> np.ndarray:
    """The export's answers as the model's outputs (what the metrics take)."""
    if task.regression:
        return outputs["score"][:, None]
    if task.multi_label:
        p = np.clip(outputs["probabilities"].astype(np.float64), 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p))
    return np.log(np.maximum(outputs["probabilities"], 1e-30))


def _about(model: str, labeled, split: str, source: str, config: RunConfig) -> dict:
    return {
        "model": model,
        "dataset": labeled.name,
        "split": split,
        "source": source,
        "flags": config.recorded(),
        "overlap": labeled.overlap,
    }


def _load(config: RunConfig, dataset: str | None, task: Task, split: str):
    from bert_keras import data

    labeled = data.from_config(config, dataset, split)
    if labeled.task != task:
        raise UsageError(
            f"--dataset={dataset} has the labels {labeled.label_names}, the model "
            f"{list(task.label_names)} ({labeled.task.problem_type} data, a "
            f"{task.problem_type} model); evaluate on a data set with the model's labels."
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
    logs.quiet_libraries()
    exit_on_usage_error(no_arguments, argv)
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
    app.run(main, flags_parser=parse_flags)
