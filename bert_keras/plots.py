"""The pictures of a report (`report.write`): PNG files, drawn with matplotlib without a display.

- `heatmaps`: square label-by-label matrices side by side (confusion matrix, co-occurrence);
- `per_class_f1`: one bar per label, with its support;
- `scatter`: predicted against true scores (regression);
- `training`: loss and the validation figures per epoch, and the loss of every step.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from bert_keras.results import best_epoch  # noqa: E402


def title(about: dict, what: str) -> str:
    return f"{what}: {about['model']} on {about['dataset']}, {about['split']} split"


def heatmaps(panels: list[tuple], names: list[str], path: Path, suptitle: str, axes_names):
    """`panels`: (values, number format, title) each; `axes_names`: (x label, y label)."""
    n = len(names)
    size = max(4.5, 0.55 * n + 2.5)
    count = len(panels)
    fig, axes = plt.subplots(
        1, count, figsize=(count * size + 1, size + 0.8), layout="constrained", squeeze=False
    )
    for ax, (values, fmt, what) in zip(axes[0], panels, strict=True):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel(axes_names[0])
        ax.set_ylabel(axes_names[1])
        ax.set_title(what, fontsize=10)
        if n <= 30:
            _annotate(ax, values, fmt, fontsize=8 if n <= 12 else 5)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(suptitle)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _annotate(ax, values, fmt: str, fontsize: int):
    high = values.max() / 2 if values.max() > 0 else 1
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            color = "white" if values[i, j] > high else "black"
            text = format(values[i, j], fmt)
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)


def per_class_f1(per_class: dict, label_names, path: Path, about: dict):
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
    ax.set_title(f"{title(about, 'F1 per class')}\nmacro-F1 {macro:.3f} (red dashes)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scatter(y_true, y_pred, name: str, path: Path, about: dict):
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    ax.scatter(y_true, y_pred, s=6, alpha=0.4, color="tab:blue")
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="tab:red", linestyle="--", linewidth=1, label="y = x")
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title(about, "Predicted against true"), fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training(epochs: list, steps_csv: Path | None, path: Path, about: dict, monitor: str):
    """`monitor`: the validation figure that picked the best epoch (F1 runs: micro- and
    macro-F1; regressions: Pearson and Spearman, their squared error being in the loss)."""
    x = [e["epoch"] for e in epochs]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    _loss_curves(loss_ax, epochs, steps_csv)
    shown = ("micro_f1", "macro_f1") if monitor == "micro_f1" else ("pearson", "spearman")
    for key in shown:
        score_ax.plot(x, [e["validation"][key] for e in epochs], "o-", label=f"validation {key}")
    best = best_epoch(epochs, monitor)["epoch"]
    score_ax.axvline(best, color="gray", linestyle=":", label=f"best epoch ({best}), tested")
    score_ax.set_xlabel("epoch")
    score_ax.set_title(f"validation {' and '.join(shown)}", fontsize=10)
    score_ax.legend()
    for ax in (loss_ax, score_ax):
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Training curves: {about['model']} on {about['dataset']}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _loss_curves(ax, epochs: list, steps_csv: Path | None):
    x = [e["epoch"] for e in epochs]
    loss_title = "loss"
    rows = []
    if steps_csv is not None and steps_csv.is_file():
        rows = [r.split(",") for r in steps_csv.read_text().splitlines()[1:]]
    if rows:
        steps = np.array([float(r[0]) for r in rows])
        losses = np.array([float(r[2]) for r in rows])
        per_epoch = steps[-1] / x[-1]
        ax.plot(steps / per_epoch, losses, color="tab:blue", alpha=0.25, linewidth=0.7)
        loss_title = "loss (faint: every training step)"
    ax.plot(x, [e["train"]["loss"] for e in epochs], "o-", label="training (epoch mean)")
    ax.plot(x, [e["validation"]["loss"] for e in epochs], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(loss_title, fontsize=10)
    ax.legend()
