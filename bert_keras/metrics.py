"""Micro-F1, macro-F1, accuracy and per-class F1 with scikit-learn, over whole splits.

>>> evaluate(model, *eval_dataset(tokens["test"], 64, 128), label_names)["micro_f1"]
0.93
"""

import keras
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from bert_keras.errors import UsageError


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


def class_weights(counts: np.ndarray, how: str) -> dict[int, float] | None:
    """Keras `class_weight` for --class_weight from the training label counts: None, or
    balanced weights (rows / (labels x rows of the class), scikit-learn's formula)."""
    if how == "none":
        return None
    if (counts == 0).any():
        missing = ", ".join(str(i) for i in np.flatnonzero(counts == 0))
        raise UsageError(
            f"--class_weight={how}: label id(s) {missing} have no training rows; give every "
            f"label training rows or use --class_weight=none."
        )
    return {i: float(counts.sum() / (len(counts) * c)) for i, c in enumerate(counts)}


def predict(model: keras.Model, dataset, y_true) -> np.ndarray:
    """float32 logits for every row of an eval dataset."""
    logits = model.predict(dataset, verbose=0)
    if len(logits) != len(y_true):
        raise RuntimeError(f"evaluated {len(logits)} examples, expected {len(y_true)}")
    return logits.astype(np.float32)


def evaluate(model: keras.Model, dataset, y_true, label_names) -> dict:
    return classification_metrics(y_true, predict(model, dataset, y_true), label_names)


def format_metrics(m: dict) -> str:
    per_class = " ".join(f"{name} {f:.3f}" for name, f in m["per_class_f1"].items())
    return (
        f"micro-F1 {m['micro_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
        f"accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  | F1: {per_class}"
    )
