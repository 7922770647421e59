"""Micro-F1, macro-F1, accuracy and per-class F1 with scikit-learn, over whole splits.

`F1Callback` evaluates the whole validation split at every epoch end and puts the figures into
Keras' `logs` (`val_micro_f1`, `val_macro_f1`, `val_accuracy`, `val_loss`, `val_f1_<label>`),
so that callbacks placed after it (checkpoint, early stopping, CSV, TensorBoard) see them.

>>> evaluate(model, *eval_dataset(tokens["test"], 64, 128), label_names)["micro_f1"]
0.93
"""

import keras
import numpy as np
from sklearn.metrics import accuracy_score, f1_score


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


def evaluate(model: keras.Model, dataset, y_true, label_names) -> dict:
    logits = model.predict(dataset, verbose=0)
    if len(logits) != len(y_true):
        raise RuntimeError(f"evaluated {len(logits)} examples, expected {len(y_true)}")
    return classification_metrics(y_true, logits.astype(np.float32), label_names)


def format_metrics(m: dict) -> str:
    per_class = " ".join(f"{name} {f:.3f}" for name, f in m["per_class_f1"].items())
    return (
        f"micro-F1 {m['micro_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
        f"accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  | F1: {per_class}"
    )


class F1Callback(keras.callbacks.Callback):
    def __init__(self, dataset, y_true, label_names):
        super().__init__()
        self.dataset = dataset
        self.y_true = y_true
        self.label_names = label_names
        self.epochs = []  # one dict per epoch: training logs and validation metrics

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        m = evaluate(self.model, self.dataset, self.y_true, self.label_names)
        for key in ("loss", "accuracy", "micro_f1", "macro_f1"):
            logs[f"val_{key}"] = m[key]
        for name, f in m["per_class_f1"].items():
            logs[f"val_f1_{name}"] = f
        train = {k: float(v) for k, v in logs.items() if not k.startswith("val_")}
        self.epochs.append({"epoch": epoch + 1, "train": train, "validation": m})
        print(f"\nEpoch {epoch + 1} validation ({m['examples']} examples): {format_metrics(m)}")
