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
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402

from bert_keras import metrics  # noqa: E402


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
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    (tmp / "classification_report.txt").write_text(text)
    (tmp / "classification_report.json").write_text(json.dumps(per_class, indent=2) + "\n")
    cm = confusion_matrix(y_true, y_pred, labels=ids)
    plot_confusion(cm, label_names, tmp / "confusion_matrix.png", about)
    plot_per_class_f1(per_class, label_names, tmp / "per_class_f1.png", about)
    if epochs:
        plot_training(epochs, steps_csv, tmp / "training_curves.png", about)
    (tmp / "REPORT.md").write_text(report_md(m, per_class, cm, label_names, about, epochs))
    os.chmod(tmp, 0o755)
    _replace(tmp, folder)
    return m


def _replace(new: Path, folder: Path):
    """The folder swaps to its new contents at once (a reader sees the old or the new)."""
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-old-"))
        os.rename(folder, old / "x")
        os.rename(new, folder)
        shutil.rmtree(old)
    else:
        os.rename(new, folder)


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
    flags = about.get("flags") or {}
    lines = [
        f"# {about['model']} on {about['dataset']}: {about['split']} split",
        "",
        f"{m['examples']:,} examples, evaluated from {about['source']}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {m['accuracy']:.4f} |",
        f"| micro-F1 | {m['micro_f1']:.4f} |",
        f"| macro-F1 | {m['macro_f1']:.4f} |",
        f"| loss | {m['loss']:.4f} |",
        "",
        "## Per class",
        "",
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
    lines += [
        "",
        "![F1 per class](per_class_f1.png)",
        "",
        "![Confusion matrix](confusion_matrix.png)",
        "",
    ]
    if epochs:
        lines += [
            "## Training",
            "",
            "| epoch | training loss | validation loss | val. micro-F1 | val. macro-F1 |",
            "|---|---|---|---|---|",
            *(
                f"| {e['epoch']} | {e['train']['loss']:.4f} | {e['validation']['loss']:.4f} | "
                f"{e['validation']['micro_f1']:.4f} | {e['validation']['macro_f1']:.4f} |"
                for e in epochs
            ),
            "",
            "![Training curves](training_curves.png)",
            "",
        ]
    if flags:
        lines += [
            "## Hyperparameters",
            "",
            "| flag | value |",
            "|---|---|",
            *(f"| `--{k}` | `{v}` |" for k, v in sorted(flags.items())),
            "",
        ]
    lines += [
        "Files: `classification_report.txt` and `.json` (scikit-learn), the PNGs above.",
        "",
    ]
    return "\n".join(lines)


def model_card(info: dict) -> str:
    """MODEL_CARD.md of an export, from its bert_keras.json."""
    training = info.get("training", {})
    test = training.get("test")
    flags = training.get("flags", {})
    counts = training.get("train_label_counts")
    names = info["label_names"]
    lines = [
        f"# Model card: {info['model']} fine-tuned on {info['dataset']}",
        "",
        f"A text classifier over {len(names)} labels: {', '.join(names)}. The SavedModel "
        f"takes raw text (signature `serving_default`, input `text`) and returns `probabilities`, "
        f"`label_id` and `label`; it tokenizes in the graph (TensorFlow Text) with the training "
        f"tokenizer's vocab (`assets/vocab.txt`), {info['max_seq_length']} tokens at most, "
        f"{'lowercased' if info['lowercase'] else 'cased'}.",
        "",
        "## Data",
        "",
        f"Data set: `{info['dataset']}`.",
    ]
    if counts:
        total = sum(counts.values())
        lines += [
            "",
            "| label | training rows | share |",
            "|---|---|---|",
            *(f"| {n} | {c:,} | {c / total:.1%} |" for n, c in counts.items()),
        ]
    lines += ["", "## Metrics", ""]
    if test:
        lines += [
            f"Test split ({test['examples']:,} examples), best epoch "
            f"{training.get('best_epoch')} of {training.get('epochs_run')} by validation "
            f"micro-F1:",
            "",
            "| metric | value |",
            "|---|---|",
            f"| accuracy | {test['accuracy']:.4f} |",
            f"| micro-F1 | {test['micro_f1']:.4f} |",
            f"| macro-F1 | {test['macro_f1']:.4f} |",
            *(f"| F1 {n} | {f:.4f} |" for n, f in test["per_class_f1"].items()),
        ]
    else:
        lines.append("No test metrics: exported from an unfinished run.")
    lines += [
        "",
        "## Training",
        "",
        "| flag | value |",
        "|---|---|",
        *(f"| `--{k}` | `{v}` |" for k, v in sorted(flags.items())),
        "",
        "Library versions at training: "
        + ", ".join(f"{k} {v}" for k, v in (info["versions"].get("training") or {}).items())
        + ".",
        "",
        "## Intended use and limits",
        "",
        f"- Classifying short English texts like those of `{info['dataset']}` into the labels "
        f"above. Every input gets one of these labels, even text that fits none of them; "
        f"texts longer than {info['max_seq_length']} tokens are cut.",
    ]
    if counts:
        rare, common = min(counts, key=counts.get), max(counts, key=counts.get)
        lines.append(
            f"- The classes are imbalanced: `{rare}` has {counts[rare]:,} training rows, "
            f"`{common}` {counts[common]:,}. Rare classes are recognised less reliably (see the "
            f"per-class F1 above); check them before relying on them"
            + (
                f" (trained with --class_weight={flags['class_weight']})."
                if flags.get("class_weight", "none") != "none"
                else "; `--class_weight=balanced` reweights them in training."
            )
        )
    lines += [
        "- Labels reflect the data set's annotation, including its errors and biases; the model "
        "has not been evaluated on other domains, languages or populations.",
        "",
    ]
    return "\n".join(lines)
