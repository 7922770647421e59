"""A split's metrics from the model's outputs (logits), with scikit-learn, for each problem type.

- single-label: accuracy, micro-F1, macro-F1, F1 per label, cross-entropy;
- multi-label: micro-F1, macro-F1, samples-F1, subset accuracy (exact match), F1 per label and
  binary cross-entropy, a label predicted where its sigmoid reaches its decision threshold
  (`tune_thresholds` picks them on validation);
- regression: Pearson r, Spearman rho, mean squared and absolute error.

Every dict has `loss` and `examples`; `HEADLINE` says which figures a table shows, in order.

>>> evaluate(model, *eval_dataset(tokens["test"], 64, 128), task)["micro_f1"]
0.93
"""

import warnings

import keras
import numpy as np
import scipy.stats
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from bert_keras.errors import UsageError
from bert_keras.task import DEFAULT_THRESHOLD, Task

HEADLINE = {
    "accuracy": "accuracy",
    "subset_accuracy": "subset accuracy (exact match)",
    "micro_f1": "micro-F1",
    "macro_f1": "macro-F1",
    "samples_f1": "samples-F1",
    "pearson": "Pearson r",
    "spearman": "Spearman rho",
    "mse": "mean squared error",
    "mae": "mean absolute error",
}


def split_metrics(task: Task, y_true, logits, thresholds=DEFAULT_THRESHOLD) -> dict:
    if task.regression:
        return regression_metrics(y_true, logits)
    if task.multi_label:
        return multi_label_metrics(y_true, logits, task.label_names, thresholds)
    return classification_metrics(y_true, logits, task.label_names)


def classification_metrics(y_true, logits, label_names) -> dict:
    y_pred = np.argmax(logits, axis=-1)
    labels = list(range(len(label_names)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    # Cross-entropy from the logits, so validation costs one forward pass, not two.
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return {
        "loss": float(-log_probs[np.arange(len(y_true)), y_true].mean()),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro")),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_class_f1": {name: float(f) for name, f in zip(label_names, per_class, strict=True)},
        "examples": len(y_true),
    }


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # no overflow for large |logits|


def multi_label_predictions(logits, thresholds=DEFAULT_THRESHOLD) -> np.ndarray:
    """0/1 [rows, labels]: each label whose probability reaches its threshold."""
    return (sigmoid(logits) >= np.asarray(thresholds, np.float32)).astype(np.int64)


def multi_label_metrics(y_true, logits, label_names, thresholds=DEFAULT_THRESHOLD) -> dict:
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = multi_label_predictions(logits, thresholds)
    precision, recall, per_class, _ = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    # Binary cross-entropy from the logits, stable for any sign.
    bce = np.maximum(logits, 0) - logits * y_true + np.log1p(np.exp(-np.abs(logits)))
    return {
        "loss": float(bce.mean()),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y_true, y_pred, average="samples", zero_division=0)),
        "per_class_f1": {name: float(f) for name, f in zip(label_names, per_class, strict=True)},
        "per_class_precision": dict(zip(label_names, precision.tolist(), strict=True)),
        "per_class_recall": dict(zip(label_names, recall.tolist(), strict=True)),
        "examples": len(y_true),
    }


def regression_metrics(y_true, outputs) -> dict:
    y_true, y_pred = np.asarray(y_true, np.float64).ravel(), np.asarray(outputs).ravel()
    constant = np.ptp(y_pred) == 0 or np.ptp(y_true) == 0

    def correlation(function) -> float:
        # Constant predictions correlate with nothing: 0, not NaN (NaN would never be "best").
        return 0.0 if constant else float(function(y_true, y_pred).statistic)

    mse = float(mean_squared_error(y_true, y_pred))
    return {
        "loss": mse,
        "pearson": correlation(scipy.stats.pearsonr),
        "spearman": correlation(scipy.stats.spearmanr),
        "mse": mse,
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "examples": len(y_true),
    }


def tune_thresholds(y_true, logits, label_names) -> dict:
    """Multi-label decision thresholds that maximise F1 on these rows (validation): one global
    (micro-F1 over all labels) and one per label (its own F1; a label without positive rows
    here takes the global one)."""
    y_true, probabilities = np.asarray(y_true).astype(np.int64), sigmoid(logits)
    best = _best_f1_threshold(y_true.ravel(), probabilities.ravel())
    per_label = {}
    for i, name in enumerate(label_names):
        found = y_true[:, i].any() and _best_f1_threshold(y_true[:, i], probabilities[:, i])
        per_label[name] = found or best
    return {"global": best, "per_label": per_label}


def _best_f1_threshold(y_true, probabilities) -> float:
    """Halfway between the lowest probability the best F1 predicts and the next lower one: the
    same predictions on these rows, and a margin for rounding (float32 in the export)."""
    precision, recall, thresholds = precision_recall_curve(y_true, probabilities)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    best = int(np.argmax(f1))
    below = thresholds[best - 1] if best else 0.0
    return float((thresholds[best] + below) / 2)


def by_threshold(y_true, logits, task: Task, thresholds: dict) -> dict:
    """Micro- and macro-F1 at 0.5, at the global and at the per-label thresholds."""
    ways = {
        "0.5": DEFAULT_THRESHOLD,
        "global": thresholds["global"],
        "per_label": list(thresholds["per_label"].values()),
    }
    found = {}
    for way, threshold in ways.items():
        m = multi_label_metrics(y_true, logits, task.label_names, threshold)
        found[way] = {"micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]}
    return found


def label_counts(labels: np.ndarray, task: Task) -> np.ndarray | None:
    """Training rows per label (multi-label: rows carrying it); None for regression."""
    if task.regression:
        return None
    if task.multi_label:
        return labels.sum(axis=0).astype(np.int64)
    return np.bincount(labels, minlength=task.outputs)


def class_weights(counts: np.ndarray | None, how: str, rows: int = 0) -> np.ndarray | None:
    """The loss weights --class_weight asks for, one per label, from the training label counts:
    None, or balanced weights. Single-label: rows / (labels x rows of the class) (scikit-learn's
    formula); multi-label (`rows` given): negatives / positives of each label."""
    if how == "none":
        return None
    if counts is None:
        raise UsageError(
            f"--class_weight={how} weighs classes; a regression has none. Use --class_weight=none."
        )
    if (counts == 0).any():
        missing = ", ".join(str(i) for i in np.flatnonzero(counts == 0))
        raise UsageError(
            f"--class_weight={how}: label id(s) {missing} have no training rows; give every "
            f"label training rows or use --class_weight=none."
        )
    if rows:
        return (rows - counts) / counts
    return counts.sum() / (len(counts) * counts)


def predict(model: keras.Model, dataset, y_true) -> np.ndarray:
    """float32 logits (regression: outputs) for every row of an eval dataset."""
    logits = model.predict(dataset, verbose=0)
    if len(logits) != len(y_true):
        raise RuntimeError(f"evaluated {len(logits)} examples, expected {len(y_true)}")
    return logits.astype(np.float32)


def evaluate(model: keras.Model, dataset, y_true, task: Task) -> dict:
    with warnings.catch_warnings():  # a label no row has: its F1 is 0, said in the tables
        warnings.simplefilter("ignore", UserWarning)
        return split_metrics(task, y_true, predict(model, dataset, y_true))


def headline(m: dict) -> list[tuple[str, float]]:
    """(name, value) of the figures a split's metrics have, in HEADLINE's order."""
    return [(name, m[key]) for key, name in HEADLINE.items() if key in m]


def format_metrics(m: dict) -> str:
    shown = "  ".join(f"{name} {value:.4f}" for name, value in headline(m)[:4])
    per_class = " ".join(f"{name} {f:.3f}" for name, f in m.get("per_class_f1", {}).items())
    return f"{shown}  loss {m['loss']:.4f}" + (f"  | F1: {per_class}" if per_class else "")
