"""Stage 8: what people look at. Pictures, per-class numbers and Markdown from predictions.

`write` puts into one folder (the trainer: `<run>/reports/test/`; `python -m bert_keras.evaluate`):
- `classification_report.txt`, `.json` (scikit-learn: precision, recall, F1, support per class)
- `confusion_matrix.png` (counts, and rows normalised to recall, label names on both axes)
- `per_class_f1.png` (one bar per class, with its support)
- `training_curves.png` (loss and validation F1 per epoch, and the loss of every step)
- `REPORT.md`, which ties them together with the hyperparameters.

`model_card` writes the `MODEL_CARD.md` of an export from its `bert_keras.json`.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402

from bert_keras import durable, metrics  # noqa: E402


def write(
    folder: Path,
    y_true: np.ndarray,
    logits: np.ndarray,
    label_names: list[str],
    about: dict,
    epochs: list | None = None,
    steps_csv: Path | None = None,
) -> dict:
    """Writes every report into `folder` (replacing an older one as a whole); returns the
    metrics. `about`: model, dataset, split, source, and the run's flags under "flags"."""
    y_pred = np.argmax(logits, axis=-1)
    ids = list(range(len(label_names)))
    m = metrics.classification_metrics(y_true, logits, label_names)
    per_class = classification_report(
        y_true, y_pred, labels=ids, target_names=label_names, output_dict=True, zero_division=0
    )
    text = classification_report(
        y_true, y_pred, labels=ids, target_names=label_names, digits=4, zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, labels=ids)

    def fill(tmp: Path):
        (tmp / "classification_report.txt").write_text(text)
        (tmp / "classification_report.json").write_text(json.dumps(per_class, indent=2) + "\n")
        plot_confusion(cm, label_names, tmp / "confusion_matrix.png", about)
        plot_per_class_f1(per_class, label_names, tmp / "per_class_f1.png", about)
        if epochs:
            plot_training(epochs, steps_csv, tmp / "training_curves.png", about)
        (tmp / "REPORT.md").write_text(report_md(m, per_class, cm, label_names, about, epochs))

    durable.write_folder(folder.parent, fill, durable.replacing(folder))
    return m


def _title(about: dict, what: str) -> str:
    return f"{what}: {about['model']} on {about['dataset']}, {about['split']} split"


def plot_confusion(cm: np.ndarray, label_names, path: Path, about: dict):
    n = len(label_names)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = max(4.5, 0.55 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size + 0.8), layout="constrained")
    for ax, values, fmt, what in (
        (axes[0], cm, "d", "counts"),
        (axes[1], normalised, ".2f", "each row divided by its total (recall on the diagonal)"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        ax.set_xticks(range(n), label_names, rotation=45, ha="right")
        ax.set_yticks(range(n), label_names)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        ax.set_title(what, fontsize=10)
        if n <= 30:
            high = values.max() / 2 if values.max() > 0 else 1
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        format(values[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if values[i, j] > high else "black",
                    )
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(_title(about, "Confusion matrix"))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_class_f1(per_class: dict, label_names, path: Path, about: dict):
    f1 = [per_class[name]["f1-score"] for name in label_names]
    support = [int(per_class[name]["support"]) for name in label_names]
    n = len(label_names)
    fig, ax = plt.subplots(figsize=(8, max(3, 0.45 * n + 1.5)), layout="constrained")
    y = np.arange(n)
    ax.barh(y, f1, color="tab:blue")
    ax.set_yticks(y, [f"{name} (n={s})" for name, s in zip(label_names, support, strict=True)])
    ax.invert_yaxis()  # first label on top, as in the tables
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("F1")
    for i, value in enumerate(f1):
        ax.text(value + 0.01, i, f"{value:.3f}", va="center", fontsize=9)
    macro = float(np.mean(f1))
    ax.axvline(macro, color="tab:red", linestyle="--", linewidth=1)
    ax.set_title(f"{_title(about, 'F1 per class')}\nmacro-F1 {macro:.3f} (red dashes)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(epochs: list, steps_csv: Path | None, path: Path, about: dict):
    x = [e["epoch"] for e in epochs]
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    loss_title = "loss"
    rows = []
    if steps_csv is not None and steps_csv.is_file():
        rows = [r.split(",") for r in steps_csv.read_text().splitlines()[1:]]
    if rows:
        steps = np.array([float(r[0]) for r in rows])
        losses = np.array([float(r[2]) for r in rows])
        per_epoch = steps[-1] / x[-1]
        loss_ax.plot(steps / per_epoch, losses, color="tab:blue", alpha=0.25, linewidth=0.7)
        loss_title = "loss (faint: every training step)"
    loss_ax.plot(x, [e["train"]["loss"] for e in epochs], "o-", label="training (epoch mean)")
    loss_ax.plot(x, [e["validation"]["loss"] for e in epochs], "s-", label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.set_title(loss_title, fontsize=10)
    loss_ax.legend()
    for key, name in (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")):
        f1_ax.plot(x, [e["validation"][key] for e in epochs], "o-", label=f"validation {name}")
    best = max(epochs, key=lambda e: e["validation"]["micro_f1"])["epoch"]
    f1_ax.axvline(best, color="gray", linestyle=":", label=f"best epoch ({best}), tested")
    f1_ax.set_xlabel("epoch")
    f1_ax.set_ylabel("F1")
    f1_ax.set_title("validation F1", fontsize=10)
    f1_ax.legend()
    for ax in (loss_ax, f1_ax):
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Training curves: {about['model']} on {about['dataset']}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_md(m, per_class, cm, label_names, about, epochs) -> str:
    lines = [
        f"# {about['model']} on {about['dataset']}: {about['split']} split",
        "",
        f"{m['examples']:,} examples, evaluated from {about['source']}.",
        "",
        *_metric_table(m),
        "",
        "## Per class",
        "",
        *_per_class_table(per_class, cm, label_names),
        "",
        "![F1 per class](per_class_f1.png)",
        "",
        "![Confusion matrix](confusion_matrix.png)",
        "",
    ]
    if epochs:
        lines += ["## Training", "", *_epoch_table(epochs), ""]
        lines += ["![Training curves](training_curves.png)", ""]
    if about.get("flags"):
        lines += ["## Hyperparameters", "", *_flag_table(about["flags"]), ""]
    lines += ["Files: `classification_report.txt` and `.json` (scikit-learn), the PNGs above.", ""]
    return "\n".join(lines)


def _metric_table(m: dict, per_class: bool = False) -> list[str]:
    rows = [("accuracy", m["accuracy"]), ("micro-F1", m["micro_f1"]), ("macro-F1", m["macro_f1"])]
    if per_class:
        rows += [(f"F1 {name}", f) for name, f in m["per_class_f1"].items()]
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


def _epoch_table(epochs: list) -> list[str]:
    return [
        "| epoch | training loss | validation loss | val. micro-F1 | val. macro-F1 |",
        "|---|---|---|---|---|",
        *(
            f"| {e['epoch']} | {e['train']['loss']:.4f} | {e['validation']['loss']:.4f} | "
            f"{e['validation']['micro_f1']:.4f} | {e['validation']['macro_f1']:.4f} |"
            for e in epochs
        ),
    ]


def _flag_table(flags: dict) -> list[str]:
    return [
        "| flag | value |",
        "|---|---|",
        *(f"| `--{k}` | `{v}` |" for k, v in sorted(flags.items())),
    ]


def model_card(info: dict) -> str:
    """MODEL_CARD.md of an export, from its bert_keras.json."""
    training = info.get("training", {})
    counts, test = training.get("train_label_counts"), training.get("test")
    names = info["label_names"]
    inputs = ", ".join(f"`{n}`" for n in info["signatures"]["serving_default"]["inputs"])
    lines = [
        f"# Model card: {info['model']} fine-tuned on {info['dataset']}",
        "",
        f"A text classifier over {len(names)} labels: {', '.join(names)}. The SavedModel takes "
        f"raw text (signature `serving_default`, inputs {inputs}) and returns `probabilities`, "
        f"`label_id` and `label`; it tokenizes in the graph (TensorFlow Text) as the training "
        f"tokenizer does ({info.get('tokenizer', 'wordpiece')}, files in `assets/`), "
        f"{info['max_seq_length']} tokens at most, "
        f"{'lowercased' if info.get('lowercase') else 'cased'}.",
        "",
        "## Data",
        "",
        f"Data set: `{info['dataset']}`.",
    ]
    if counts:
        total = sum(counts.values())
        lines += ["", "| label | training rows | share |", "|---|---|---|"]
        lines += [f"| {n} | {c:,} | {c / total:.1%} |" for n, c in counts.items()]
    lines += ["", "## Metrics", ""]
    if test:
        lines += [
            f"Test split ({test['examples']:,} examples), best epoch "
            f"{training.get('best_epoch')} of {training.get('epochs_run')} by validation "
            f"micro-F1:",
            "",
            *_metric_table(test, per_class=True),
        ]
    else:
        lines.append("No test metrics: exported from an unfinished run.")
    versions = info["versions"].get("training") or {}
    lines += ["", "## Training", "", *_flag_table(training.get("flags", {})), ""]
    lines += ["Library versions at training: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    lines[-1] += "."
    lines += ["", "## Intended use and limits", "", *_limits(info, counts), ""]
    return "\n".join(lines)


def _limits(info: dict, counts: dict | None) -> list[str]:
    flags = info.get("training", {}).get("flags", {})
    lines = [
        f"- Classifying short English texts like those of `{info['dataset']}` into the labels "
        f"above. Every input gets one of these labels, even text that fits none of them; "
        f"texts longer than {info['max_seq_length']} tokens are cut."
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
