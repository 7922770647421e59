"""Micro-F1, macro-F1, accuracy and per-class F1 with scikit-learn, over whole splits.

`F1Callback` evaluates the whole validation split at every epoch end and puts the figures into
Keras' `logs` (`val_micro_f1`, `val_macro_f1`, `val_accuracy`, `val_loss`, `val_f1_<label>`),
so that callbacks placed after it (`BestEpoch`, TensorBoard) see them. `BestEpoch` keeps the best
checkpoint and decides early stopping from the list of epochs alone, so a resumed run (which
restores that list) decides as the uninterrupted one would have; Keras' ModelCheckpoint,
EarlyStopping and CSVLogger keep that state in memory and write in place.

>>> evaluate(model, *eval_dataset(tokens["test"], 64, 128), label_names)["micro_f1"]
0.93
"""

import csv
import io
import math
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from bert_keras import rundir
from bert_keras.errors import TrainingError, UsageError


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


class F1Callback(keras.callbacks.Callback):
    def __init__(self, dataset, y_true, label_names, epochs: list | None = None):
        super().__init__()
        self.dataset = dataset
        self.y_true = y_true
        self.label_names = label_names
        # One dict per epoch: training logs and validation metrics (a resumed run's so far).
        self.epochs = epochs if epochs is not None else []

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


class BestEpoch(keras.callbacks.Callback):
    """After F1Callback: saves the weights when an epoch has the best validation micro-F1 so far
    (the earliest of equals), rewrites `training.csv` from all epochs, and stops training after
    `patience` epochs without a better one (0 = never). Every file is replaced by a rename."""

    def __init__(self, epochs: list, weights: Path, csv_path: Path, patience: int):
        super().__init__()
        self.epochs = epochs  # F1Callback.epochs: the same list
        self.weights = weights
        self.csv_path = csv_path
        self.patience = patience

    def best(self) -> dict | None:
        """The best epoch so far (an epoch whose validation loss is not finite never is)."""
        sane = [e for e in self.epochs if math.isfinite(e["validation"]["loss"])]
        return max(sane, key=lambda e: e["validation"]["micro_f1"], default=None)

    def should_stop(self) -> bool:
        best = self.best()
        return best is not None and 0 < self.patience <= len(self.epochs) - best["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        if self.best() is self.epochs[-1]:
            rundir.replace_atomically(
                self.weights, lambda tmp: self.model.save_weights(tmp, overwrite=True)
            )
        rundir.write_text(self.csv_path, training_csv(self.epochs))
        if self.should_stop():
            self.model.stop_training = True


def training_csv(epochs: list) -> str:
    """One row per epoch: its training logs, then its validation metrics."""
    rows = []
    for e in epochs:
        v = e["validation"]
        row = {"epoch": e["epoch"], **e["train"]}
        row.update({f"val_{k}": v[k] for k in ("loss", "accuracy", "micro_f1", "macro_f1")})
        row.update({f"val_f1_{name}": f for name, f in v["per_class_f1"].items()})
        rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class StepLog(keras.callbacks.Callback):
    """`steps.csv`: global step, epoch and that step's training loss, flushed line by line. A
    resumed run first drops the rows past its backup, so the file reads as one run's.

    `batch_sizes[i]` is the size of the batch of global step i + 1 (`pipeline.batch_sizes`).
    """

    def __init__(self, path: Path, resume_step: int, batch_sizes: list[int]):
        super().__init__()
        kept = []
        if resume_step and path.is_file():
            for row in path.read_text().splitlines()[1:]:
                if row.count(",") == 2 and int(row.split(",")[0]) <= resume_step:
                    kept.append(row)
        rundir.write_text(path, "\n".join(["step,epoch,loss", *kept]) + "\n")
        self.file = open(path, "a")  # noqa: SIM115  (written to for the whole run)
        self.batch_sizes = batch_sizes

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.rows, self.mean = epoch + 1, 0, 0.0
        self.step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the epoch's running mean, weighted by batch size (a megabatch's last
        # batch is partial); this step's loss is the change in its weighted sum (the mean of
        # the steps since the last call with --steps_per_execution > 1).
        step = int(self.model.optimizer.iterations.numpy())
        new_rows = sum(self.batch_sizes[self.step : step])
        mean = float(logs["loss"])
        rows = self.rows + new_rows
        loss = (rows * mean - self.rows * self.mean) / max(new_rows, 1)
        self.rows, self.mean, self.step = rows, mean, step
        self.file.write(f"{step},{self.epoch},{loss:.6g}\n")
        self.file.flush()


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Ends training with a TrainingError at the first step whose training loss, or the first
    epoch whose validation loss, is NaN or infinite. Place it after F1Callback and before the
    callbacks that save: Keras' TerminateOnNaN lets them save the poisoned weights first."""

    def __init__(self, describe):
        super().__init__()
        self.describe = describe  # what was kept and what to do, for the message

    def on_train_batch_end(self, batch, logs=None):
        self._check(float(logs["loss"]), "training loss", "at")

    def on_epoch_end(self, epoch, logs=None):
        self._check(float(logs.get("val_loss", 0.0)), "validation loss", "after")

    def _check(self, loss: float, what: str, when: str):
        if not math.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            raise TrainingError(f"the {what} became {loss} {when} step {step}; {self.describe()}")
