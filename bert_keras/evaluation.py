"""Evaluate a run's best checkpoint, or an export, on a split, and write the reports.

    bert-keras evaluate --run_dir=runs/emotion [--split=test] [--dataset=...]
    bert-keras evaluate --export_dir=runs/emotion/export/emotion/1 [--split=validation]

Reports (`report.write`) go to `--report_dir`, by default `<run_dir>/reports/<split>-<data set
name>` (for an export, the run directory it records; else
`./reports/<model name>-<version>-<split>`): never over `<run_dir>/reports/test`, which the
trainer writes itself at the end of a run. A `--report_dir` that is the run (or export), above
it, or a folder of other files is refused before any work: the reports replace their folder as a
whole. `--dataset` evaluates on
another data set with the same labels (same column flags as the run unless given).
"""

import dataclasses
from pathlib import Path

import numpy as np
from absl import flags

from bert_keras.config import RunConfig
from bert_keras.data import SPLITS
from bert_keras.errors import UsageError
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
        {split: labeled.splits[split]}, tokenize.load_tokenizer(ckpt), config.encoder.max_seq_length
    )
    ds, y_true = pipeline.eval_dataset(
        tokens[split], 64, config.encoder.max_seq_length, inputs=ckpt.family.inputs
    )
    logits = metrics.predict(run.load_classifier(ckpt), ds, y_true)
    results = run.results()
    about = _about(ckpt.name, labeled, split, f"the best checkpoint of {run}", config)
    folder = report_dir or run.report_dir(split, labeled.name)
    epochs, thresholds = (results.epochs, results.thresholds) if results else (None, None)
    report.write(folder, y_true, logits, task, about, epochs, run.steps_csv, thresholds)
    return folder


_FORMAT_NAMES = {"savedmodel": "SavedModel", "onnx": "ONNX model", "hf": "Hugging Face folder"}


def from_export(export_dir: Path, split: str, dataset: str | None, report_dir: Path | None):
    from bert_keras import data, predict, report

    predictor = predict.Predictor(export_dir)
    export_dir = predictor.export_dir
    info, task = predictor.info, predictor.task
    config = RunConfig.parse(f"--{k}={v}" for k, v in info.training.flags.items())
    labeled = _load(config, dataset or info.dataset, task, split)
    rows = labeled.splits[split]
    logits = np.concatenate(
        [
            _logits(predictor.outputs(batch["text"], batch.get("text_pair")), task)
            for batch in rows.iter(batch_size=64)
        ]
    )
    run = RunDir(info.training.run_dir)
    folder = report_dir or (
        run.report_dir(split, labeled.name)
        if run.flags.is_file()
        else Path("reports") / f"{export_dir.parent.name}-{export_dir.stem}-{split}"
    )
    about = _about(
        info.model, labeled, split, f"the {_FORMAT_NAMES[predictor.format]} {export_dir}", config
    )
    thresholds = info.training.thresholds
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

    given = config.data
    if dataset:  # another data set, read with the run's column flags
        files = {"train_file": "", "validation_file": "", "test_file": ""}
        given = dataclasses.replace(given, dataset=dataset, **files)
    labeled = data.from_config(given, config.training.seed, split)
    if labeled.task != task:
        raise UsageError(
            f"--dataset={dataset} has the labels {labeled.label_names}, the model "
            f"{list(task.label_names)} ({labeled.task.problem_type} data, a "
            f"{task.problem_type} model); evaluate on a data set with the model's labels."
        )
    return labeled


def define_flags(values: flags.FlagValues):
    flags.DEFINE_string(
        "run_dir", None, "A bert_keras run directory: its best checkpoint.", flag_values=values
    )
    flags.DEFINE_string(
        "export_dir",
        None,
        "Or a SavedModel (version folder, model folder or run directory).",
        flag_values=values,
    )
    flags.DEFINE_enum("split", "test", list(SPLITS), "The split to evaluate.", flag_values=values)
    flags.DEFINE_string(
        "dataset",
        None,
        "Evaluate on this data set instead of the run's (same labels).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "report_dir", None, "Where the reports go (see the module's doc).", flag_values=values
    )


def evaluate(run_dir=None, export_dir=None, split="test", dataset=None, report_dir=None) -> Path:
    """Reports of a run's best checkpoint (`run_dir`) or an export (`export_dir`) on `split`
    (of `dataset`, with the same labels, when given); returns the reports' folder."""
    if bool(run_dir) == bool(export_dir):
        raise UsageError("give one of --run_dir (a training run) or --export_dir (an export).")
    report_dir = Path(report_dir) if report_dir else None
    if report_dir:
        check_report_dir(report_dir, Path(run_dir or export_dir))
    if run_dir:
        return from_run(Path(run_dir), split, dataset, report_dir)
    return from_export(Path(export_dir), split, dataset, report_dir)


def check_report_dir(report_dir: Path, source: Path):
    """A UsageError unless `report_dir` is a folder the reports may replace as a whole: new,
    empty or an earlier report, and neither the run (or export) evaluated nor above it."""
    folder, source = report_dir.resolve(), source.resolve()
    if folder == source or folder in source.parents:
        raise UsageError(
            f"--report_dir={report_dir} holds {source}, which the reports would replace; give a "
            f"folder of its own, such as {source / 'reports' / 'mine'}."
        )
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "REPORT.md").is_file():
        raise UsageError(
            f"--report_dir={report_dir} holds other files than a report, which the reports "
            f"would replace; give a new or empty folder."
        )


def main(argv):
    """`bert-keras evaluate` and `python -m bert_keras.evaluate`."""
    from bert_keras import cli

    f = flags.FLAGS
    names = ("run_dir", "export_dir", "split", "dataset", "report_dir")
    folder = cli.run_command(argv, lambda: evaluate(**{n: f[n].value for n in names}))
    print((folder / "REPORT.md").read_text())
    print(f"Reports in {folder}")
