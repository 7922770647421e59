"""Stage 8: what people look at. Pictures, per-label numbers and Markdown from predictions.

`write` puts into one folder (the trainer: `<run>/reports/test/`; `python -m bert_keras.evaluate`):
- single-label: `classification_report.txt`, `.json` (scikit-learn: precision, recall, F1,
  support per class), `confusion_matrix.png` (counts, and rows normalised to recall),
  `per_class_f1.png` (one bar per class, with its support);
- multi-label: the classification report (with micro, macro and samples averages),
  `per_class_f1.png`, `label_cooccurrence.png` (how often two labels are on one text, true and
  predicted); REPORT.md adds each label's threshold and confusion counts (TP, FP, FN);
- regression: `scatter.png` (predicted against true);
- `training_curves.png` (loss and validation figures per epoch, and the loss of every step);
- `REPORT.md`, which ties them together with the texts found in several splits and the
  hyperparameters.

`model_card` writes the `MODEL_CARD.md` of an export from its `bert_keras.json`.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, multilabel_confusion_matrix

from bert_keras import durable, metrics, plots
from bert_keras.serving.info import ExportInfo
from bert_keras.serving.module import OUTPUTS
from bert_keras.task import DEFAULT_THRESHOLD, Task


def write(
    folder: Path,
    y_true: np.ndarray,
    logits: np.ndarray,
    task: Task,
    about: dict,
    epochs: list | None = None,
    steps_csv: Path | None = None,
    thresholds: dict | None = None,
) -> dict:
    """Writes every report into `folder` (replacing an older one as a whole); returns the
    metrics. `about`: model, dataset, split, source, the run's flags under "flags" and the
    overlap of its splits under "overlap"; `thresholds`: a multi-label run's tuned ones."""
    served = list(thresholds["per_label"].values()) if thresholds else DEFAULT_THRESHOLD
    m = metrics.split_metrics(task, y_true, logits, served)
    names = list(task.label_names)
    if task.regression:
        files, sections = _regression(y_true, logits, names[0], about)
    elif task.multi_label:
        files, sections = _multi_label(y_true, logits, names, about, served, thresholds)
    else:
        files, sections = _single_label(y_true, logits, names, about)

    def fill(tmp: Path):
        files(tmp)
        if epochs:
            plots.training(epochs, steps_csv, tmp / "training_curves.png", about, task.monitor)
        (tmp / "REPORT.md").write_text(report_md(m, sections, about, epochs))

    durable.write_folder(folder.parent, fill, durable.replacing(folder))
    return m


def _classification_report(y_true, y_pred, names) -> tuple[dict, Callable]:
    """scikit-learn's report per label (a dict), and what writes it as .txt and .json."""
    options = {"labels": list(range(len(names))), "target_names": names, "zero_division": 0}
    per_class = classification_report(y_true, y_pred, output_dict=True, **options)
    text = classification_report(y_true, y_pred, digits=4, **options)

    def write(tmp: Path):
        (tmp / "classification_report.txt").write_text(text)
        (tmp / "classification_report.json").write_text(json.dumps(per_class, indent=2) + "\n")

    return per_class, write


def _single_label(y_true, logits, names, about):
    y_pred = np.argmax(logits, axis=-1)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(names))))
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    per_class, write_report = _classification_report(y_true, y_pred, names)

    def files(tmp: Path):
        write_report(tmp)
        panels = [
            (cm, "d", "counts"),
            (normalised, ".2f", "each row divided by its total (recall on the diagonal)"),
        ]
        title = plots.title(about, "Confusion matrix")
        axes = ("predicted label", "true label")
        plots.heatmaps(panels, names, tmp / "confusion_matrix.png", title, axes)
        plots.per_class_f1(per_class, names, tmp / "per_class_f1.png", about)

    sections = [
        "## Per class",
        "",
        *_per_class_table(per_class, cm, names),
        "",
        "![F1 per class](per_class_f1.png)",
        "",
        "![Confusion matrix](confusion_matrix.png)",
        "",
    ]
    return files, sections


def _multi_label(y_true, logits, names, about, served, thresholds):
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = metrics.multi_label_predictions(logits, served)
    per_class, write_report = _classification_report(y_true, y_pred, names)

    def files(tmp: Path):
        write_report(tmp)
        plots.per_class_f1(per_class, names, tmp / "per_class_f1.png", about)
        panels = [(y_true.T @ y_true, "d", "true labels"), (y_pred.T @ y_pred, "d", "predicted")]
        title = plots.title(about, "Texts carrying both labels (diagonal: each label's texts)")
        plots.heatmaps(panels, names, tmp / "label_cooccurrence.png", title, ("label", "label"))

    served = np.broadcast_to(np.asarray(served, np.float64), (len(names),))
    sections = [
        "## Per label",
        "",
        "A label is predicted where its probability reaches its threshold"
        + (" (tuned on the validation split to maximise its F1)." if thresholds else "."),
        "",
        *_per_label_table(per_class, multilabel_confusion_matrix(y_true, y_pred), names, served),
        "",
        "![F1 per label](per_class_f1.png)",
        "",
        *(_threshold_table(thresholds) if thresholds and "test" in thresholds else []),
        "![Label co-occurrence](label_cooccurrence.png)",
        "",
    ]
    return files, sections


def _regression(y_true, outputs, name: str, about):
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(outputs).ravel()

    def files(tmp: Path):
        plots.scatter(y_true, y_pred, name, tmp / "scatter.png", about)

    return files, ["![Predicted against true](scatter.png)", ""]


def report_md(m: dict, sections: list[str], about: dict, epochs) -> str:
    lines = [
        f"# {about['model']} on {about['dataset']}: {about['split']} split",
        "",
        f"{m['examples']:,} examples, evaluated from {about['source']}.",
        "",
        *_metric_table(m),
        "",
        *sections,
    ]
    if epochs:
        lines += ["## Training", "", *_epoch_table(epochs), ""]
        lines += ["![Training curves](training_curves.png)", ""]
    if about.get("overlap") is not None:
        lines += [*_overlap_section(about["overlap"], about.get("flags", {})), ""]
    if about.get("flags"):
        lines += ["## Hyperparameters", "", *_flag_table(about["flags"]), ""]
    lines += ["Files: the PNGs above, and the classification report (scikit-learn) if any.", ""]
    return "\n".join(lines)


def _metric_table(m: dict, per_class: bool = False) -> list[str]:
    rows = metrics.headline(m)
    if per_class:
        rows += [(f"F1 {name}", f) for name, f in m.get("per_class_f1", {}).items()]
    else:
        rows.append(("loss", m["loss"]))
    return ["| metric | value |", "|---|---|", *(f"| {k} | {v:.4f} |" for k, v in rows)]


def _per_class_table(per_class: dict, cm: np.ndarray, label_names) -> list[str]:
    lines = [
        "| label | precision | recall | F1 | support | most often mistaken for |",
        "|---|---|---|---|---|---|",
    ]
    for i, name in enumerate(label_names):
        c = per_class[name]
        errors = cm[i].copy()
        errors[i] = 0
        confused = (
            f"{label_names[int(errors.argmax())]} ({int(errors.max())})" if errors.max() else ""
        )
        lines.append(
            f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1-score']:.4f} | "
            f"{int(c['support'])} | {confused} |"
        )
    return lines


def _per_label_table(per_class: dict, mcm: np.ndarray, names, thresholds) -> list[str]:
    """Per label: its threshold, precision, recall, F1, support and confusion counts."""
    lines = [
        "| label | threshold | precision | recall | F1 | support | TP | FP | FN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, name in enumerate(names):
        c, ((_, fp), (fn, tp)) = per_class[name], mcm[i]
        lines.append(
            f"| {name} | {thresholds[i]:.3f} | {c['precision']:.4f} | {c['recall']:.4f} | "
            f"{c['f1-score']:.4f} | {int(c['support'])} | {tp} | {fp} | {fn} |"
        )
    return lines


def _threshold_table(thresholds: dict) -> list[str]:
    rows = {"0.5": "0.5 for every label", "global": f"{thresholds['global']:.3f} for every label"}
    rows["per_label"] = "each label's own (the table above; the export's)"
    return [
        "Decision thresholds compared on this split (all tuned on validation, none on it):",
        "",
        "| thresholds | micro-F1 | macro-F1 |",
        "|---|---|---|",
        *(
            f"| {rows[way]} | {f['micro_f1']:.4f} | {f['macro_f1']:.4f} |"
            for way, f in thresholds["test"].items()
        ),
        "",
    ]


def _epoch_table(epochs: list) -> list[str]:
    keys = [
        k for k in ("micro_f1", "macro_f1", "pearson", "spearman") if k in epochs[0]["validation"]
    ]
    names = [metrics.HEADLINE[k] for k in keys]
    return [
        f"| epoch | training loss | validation loss | {' | '.join(f'val. {n}' for n in names)} |",
        "|---|---|---|" + "---|" * len(keys),
        *(
            f"| {e['epoch']} | {e['train']['loss']:.4f} | {e['validation']['loss']:.4f} | "
            + " | ".join(f"{e['validation'][k]:.4f}" for k in keys)
            + " |"
            for e in epochs
        ),
    ]


def _overlap_section(overlap: dict, flags: dict) -> list[str]:
    lines = ["## Texts in more than one split", ""]
    if not overlap:
        return [*lines, "None: no text (after whitespace normalisation) is in two splits."]
    dropped = flags.get("drop_overlap") == "true"
    lines += [
        "Distinct texts (after whitespace normalisation) found in both splits"
        + (" (removed from train by --drop_overlap):" if dropped else ":"),
        "",
        "| splits | texts |",
        "|---|---|",
        *(f"| {pair.replace('/', ' and ')} | {n:,} |" for pair, n in overlap.items()),
    ]
    if not dropped:
        lines += ["", "`--drop_overlap` removes them from train."]
    return lines


def _flag_table(flags: dict) -> list[str]:
    return [
        "| flag | value |",
        "|---|---|",
        *(f"| `--{k}` | `{v}` |" for k, v in sorted(flags.items())),
    ]


def model_card(info: ExportInfo) -> str:
    """MODEL_CARD.md of an export, from its bert_keras.json."""
    training = info.training
    counts, test = training.train_label_counts, training.test
    task = Task(info.problem_type, info.label_names)
    inputs = ", ".join(f"`{n}`" for n in info.signatures["serving_default"]["inputs"])
    outputs = ", ".join(f"`{n}`" for n in OUTPUTS[task.problem_type])
    lines = [
        f"# Model card: {info.model} fine-tuned on {info.dataset}",
        "",
        f"{_what(task)} The SavedModel takes raw text (signature `serving_default`, inputs "
        f"{inputs}) and returns {outputs}; it tokenizes in the graph (TensorFlow Text) as the "
        f"training tokenizer does ({info.tokenizer.get('tokenizer', 'wordpiece')}, files in "
        f"`assets/`), {info.max_seq_length} tokens at most, "
        f"{'lowercased' if info.tokenizer.get('lowercase') else 'cased'}.",
        "",
        "## Data",
        "",
        f"Data set: `{info.dataset}`.",
    ]
    if counts:
        total = sum(counts.values())
        share = "share of training rows" if task.multi_label else "share"
        lines += ["", f"| label | training rows | {share} |", "|---|---|---|"]
        lines += [f"| {n} | {c:,} | {c / total:.1%} |" for n, c in counts.items()]
    lines += ["", "## Metrics", "", *_card_metrics(test, training, task, info), ""]
    versions = info.versions.get("training") or {}
    lines += ["## Training", "", *_flag_table(training.flags), ""]
    lines += ["Library versions at training: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    lines[-1] += "."
    lines += ["", "## Intended use and limits", "", *_limits(info, counts, task), ""]
    return "\n".join(lines)


def _what(task: Task) -> str:
    names = ", ".join(task.label_names)
    if task.regression:
        return f"A text regressor: it predicts `{task.label_names[0]}`, a number per text."
    if task.multi_label:
        return f"A multi-label text classifier over {task.outputs} labels: {names}."
    return f"A text classifier over {task.outputs} labels: {names}."


def _card_metrics(test: dict | None, training, task: Task, info: ExportInfo) -> list[str]:
    if not test:
        return ["No test metrics: exported from an unfinished run."]
    lines = [
        f"Test split ({test['examples']:,} examples), best epoch {training.best_epoch} of "
        f"{training.epochs_run} by validation {task.monitor_name}:",
        "",
        *_metric_table(test, per_class=True),
    ]
    if task.multi_label:
        thresholds = info.thresholds or []
        tuned = training.thresholds
        lines += [
            "",
            "Decision thresholds (a label is predicted where its probability reaches its own)"
            + (
                f", tuned on the validation split (one global threshold would be "
                f"{tuned['global']:.3f}):"
                if tuned
                else ":"
            ),
            "",
            "| label | threshold |",
            "|---|---|",
            *(f"| {n} | {t:.3f} |" for n, t in zip(task.label_names, thresholds, strict=True)),
        ]
    return lines


def _limits(info: ExportInfo, counts: dict | None, task: Task) -> list[str]:
    flags = info.training.flags
    answers = {
        "single_label": "Every input gets one of these labels, even text that fits none of them",
        "multi_label": "Every label whose probability reaches its threshold is given; a text may "
        "get none, or several",
        "regression": "Every input gets a number, even text unlike any seen in training",
    }
    lines = [
        f"- For short English texts like those of `{info.dataset}`. "
        f"{answers[task.problem_type]}; texts longer than {info.max_seq_length} tokens are cut."
    ]
    if counts:
        rare, common = min(counts, key=counts.get), max(counts, key=counts.get)
        weighted = flags.get("class_weight", "none") != "none"
        lines.append(
            f"- The classes are imbalanced: `{rare}` has {counts[rare]:,} training rows, "
            f"`{common}` {counts[common]:,}. Rare classes are recognised less reliably (see the "
            f"per-class F1 above); check them before relying on them"
            + (
                f" (trained with --class_weight={flags['class_weight']})."
                if weighted
                else "; `--class_weight=balanced` reweights them in training."
            )
        )
    lines.append(
        "- Labels reflect the data set's annotation, including its errors and biases; the model "
        "has not been evaluated on other domains, languages or populations."
    )
    return lines
