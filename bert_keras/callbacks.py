"""Stage 6: what happens around each training step and epoch.

The callbacks share one `results.History` (the epochs so far, the seconds spent), handed to each
explicitly: `F1Callback` and `EpochTimer` write it, `BestEpoch`, `StopOnNonFiniteLoss` and
`backup.Backup` read it. `for_run` builds the list in the one order that works (validation
first, then what decides on it, then what saves it). A resumed run restores the history from its
backup, so the best checkpoint and early stopping decide as the uninterrupted run would have;
Keras' ModelCheckpoint, EarlyStopping and CSVLogger keep that state in memory and write in place.
"""

import csv
import io
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from bert_keras import durable, metrics
from bert_keras.errors import TrainingError
from bert_keras.results import History


class StepCounter(keras.callbacks.Callback):
    """The run's global step (optimizer updates done, resumed ones included), counted from the
    batches `fit` consumed, not read from `optimizer.iterations`: under float16 loss scaling
    Keras skips the update of a step whose gradients are not finite without advancing
    `iterations`, and its batch is consumed all the same. `micro`: micro-batches per update
    (--gradient_accumulation_steps). First in the callbacks: the others read `step`."""

    def __init__(self, step: int, micro: int = 1):
        super().__init__()
        self.step, self.micro = step, micro

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start + (batch + 1) // self.micro


class StepClock(keras.callbacks.Callback):
    """The time at the end of each training step, after `start` when one is given: how the
    benchmark and the search's budget check time steps."""

    def __init__(self, start: float | None = None):
        super().__init__()
        self.stamps = [] if start is None else [start]

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


class EpochTimer(keras.callbacks.Callback):
    """Keeps the history's seconds spent training (without the validation that follows each
    epoch) current at every step, and the seconds from the process's start (the command) to the
    end of the first training step."""

    def __init__(self, history: History):
        super().__init__()
        self.history = history

    def on_epoch_begin(self, epoch, logs=None):
        self._before, self._start = self.history.training_seconds, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._update()
        if self.history.first_step_seconds is None:
            self.history.first_step_seconds = time.time() - _process_start()

    def on_epoch_end(self, epoch, logs=None):
        self._update()

    def _update(self):
        self.history.training_seconds = self._before + time.perf_counter() - self._start


def _process_start() -> float:
    """When this process started, in time.time()'s clock (Linux: /proc; else module import)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


class F1Callback(keras.callbacks.Callback):
    """Evaluates the whole validation split at every epoch end (scikit-learn), appends the epoch
    to the history and puts the figures into Keras' `logs` (`val_micro_f1`, `val_macro_f1`,
    `val_loss`, ..., `val_f1_<label>`) for the callbacks after it (TensorBoard)."""

    def __init__(self, history: History, counter: StepCounter, dataset, y_true, task):
        super().__init__()
        self.history, self.counter = history, counter
        self.dataset, self.y_true, self.task = dataset, y_true, task

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        m = metrics.evaluate(self.model, self.dataset, self.y_true, self.task)
        # As float32, as TensorBoard writes them: a figure beyond its range (a diverged
        # regression's squared error) is written as inf, not raised from tf.summary.
        with np.errstate(over="ignore"):
            logs.update({k: np.float32(v) for k, v in validation_logs(m).items()})
        train = {k: float(v) for k, v in logs.items() if not k.startswith("val_")}
        entry = {"epoch": epoch + 1, "step": self.counter.step, "train": train, "validation": m}
        self.history.epochs.append(entry)
        shown = metrics.format_metrics(m)
        print(f"\nEpoch {epoch + 1} validation ({m['examples']} examples): {shown}")


def validated(history: History, epoch: int, who: str):
    """Callbacks that decide on an epoch's validation run after F1Callback: checked, not
    assumed."""
    if not history.epochs or history.epochs[-1]["epoch"] != epoch + 1:
        raise RuntimeError(f"{who} ran before F1Callback validated epoch {epoch + 1}")


class BestEpoch(keras.callbacks.Callback):
    """Saves the weights when an epoch has the best validation `monitor` so far, rewrites
    `training.csv` from all epochs, and stops training after `patience` epochs without a better
    one (0 = never)."""

    def __init__(self, history: History, weights: Path, csv_path: Path, patience: int):
        super().__init__()
        self.history = history
        self.weights, self.csv_path, self.patience = weights, csv_path, patience

    def on_epoch_end(self, epoch, logs=None):
        validated(self.history, epoch, "BestEpoch")
        if self.history.best() is self.history.epochs[-1] and all_finite(
            self.model.trainable_variables
        ):
            durable.write_file(
                self.weights, lambda tmp: self.model.save_weights(tmp, overwrite=True)
            )
        durable.write_text(self.csv_path, training_csv(self.history.epochs))
        if stop_early(self.history, self.patience):
            self.model.stop_training = True


class EmaWeights(keras.callbacks.SwapEMAWeights):
    """Swaps the optimizer's moving average of the weights with the weights at each epoch's
    end (Keras' swap, which works under any strategy): one instance before validation puts the
    average in, one after the best checkpoint takes it out again, so validation and the best
    checkpoint see the average, and training and backups the weights themselves."""

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        self._swap_variables()

    def on_test_begin(self, logs=None):
        pass

    on_test_end = on_predict_begin = on_predict_end = on_test_begin


def ends_epoch(callback: keras.callbacks.Callback, batch: int) -> bool:
    """Batch `batch` (Keras' index in the epoch) is the epoch's last: what is done at a step is
    then left to the epoch's end, after its validation."""
    return batch + 1 == callback.params.get("steps")


def all_finite(variables) -> bool:
    """No NaN or infinity in any of these variables (never saved: a checkpoint must load)."""
    return all(bool(keras.ops.all(keras.ops.isfinite(v.value))) for v in variables)


def stop_early(history: History, patience: int) -> bool:
    """`patience` epochs (0 = never) passed without a better validation `monitor`."""
    return 0 < patience <= history.epochs_since_best()


def validation_logs(m: dict) -> dict:
    """A split's metrics as Keras logs: `val_<figure>`, `val_f1_<label>`."""
    logs = {"val_loss": m["loss"], **{f"val_{k}": m[k] for k in metrics.HEADLINE if k in m}}
    logs.update({f"val_f1_{name}": f for name, f in m.get("per_class_f1", {}).items()})
    return logs


def training_csv(epochs: list) -> str:
    """One row per epoch: its training logs, then its validation metrics."""
    rows = [{"epoch": e["epoch"], **e["train"], **validation_logs(e["validation"])} for e in epochs]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class StepLog(keras.callbacks.Callback):
    """`steps.csv`: global step, epoch and that step's training loss, flushed line by line. A
    resumed run first drops the rows past its backup, so the file reads as one run's.

    `batch_sizes[i]` is the size of the batch of global step i + 1 (`pipeline.batches`).
    """

    def __init__(self, path: Path, counter: StepCounter, batch_sizes: list[int]):
        super().__init__()
        resume_step, self.counter = counter.step, counter
        kept = []
        if resume_step and path.is_file():
            for row in path.read_text().splitlines()[1:]:
                if row.count(",") == 2 and int(row.split(",")[0]) <= resume_step:
                    kept.append(row)
        durable.write_text(path, "\n".join(["step,epoch,loss", *kept]) + "\n")
        self.file = open(path, "a")  # noqa: SIM115  (written to for the whole run)
        self.batch_sizes = batch_sizes

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.rows, self.mean = epoch + 1, 0, 0.0
        self.step = self.counter.step

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the epoch's running mean, weighted by batch size (a megabatch's last
        # batch is partial); this step's loss is the change in its weighted sum (the mean of
        # the steps since the last call with --steps_per_execution > 1).
        step = self.counter.step
        if step == self.step:
            return  # a micro-batch (--gradient_accumulation_steps): the update is to come
        new_rows = sum(self.batch_sizes[self.step : step])
        mean = float(logs["loss"])
        rows = self.rows + new_rows
        loss = (rows * mean - self.rows * self.mean) / max(new_rows, 1)
        self.rows, self.mean, self.step = rows, mean, step
        self.file.write(f"{step},{self.epoch},{loss:.6g}\n")
        self.file.flush()


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Ends training with a TrainingError at the first step whose training loss, or the first
    epoch whose validation loss, is NaN or infinite, before the callbacks that save (Keras'
    TerminateOnNaN lets them save the poisoned weights first). The message says what was kept
    and what to do (`advice`)."""

    def __init__(self, history: History, counter: StepCounter, best_weights: Path, advice: str):
        super().__init__()
        self.history, self.counter = history, counter
        self.best_weights, self.advice = best_weights, advice

    def on_train_batch_end(self, batch, logs=None):
        self._check(float(logs["loss"]), "training loss", "at")

    def on_epoch_end(self, epoch, logs=None):
        validated(self.history, epoch, "StopOnNonFiniteLoss")
        self._check(self.history.epochs[-1]["validation"]["loss"], "validation loss", "after")

    def _check(self, loss: float, what: str, when: str):
        if math.isfinite(loss):
            return
        step = self.counter.step
        b, monitor = self.history.best(), self.history.monitor
        kept = (
            "no epoch had finished, so there is no best checkpoint"
            if b is None
            else f"the best checkpoint so far (epoch {b['epoch']}, validation "
            f"{metrics.HEADLINE[monitor]} {b['validation'][monitor]:.4f}) is kept in "
            f"{self.best_weights}"
        )
        raise TrainingError(f"the {what} became {loss} {when} step {step}; {kept}. {self.advice}")


class RunCallback(keras.callbacks.Callback):
    """A Keras callback that also reads the run's history (every validation so far, resumed ones
    included: `results.History`) and the run's length in steps, which `tell_run` gives it before
    training."""

    history: History | None = None
    total_steps: int = 0


def tell_run(callbacks, history: History, total_steps: int):
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            callback.history, callback.total_steps = history, total_steps


def for_run(
    history: History, config, run, validation, step_log: StepLog, backup, tensorboard=True
) -> list:
    """The run's callbacks in their order: the step counter (`step_log.counter`) and the timer;
    validation (F1Callback) before everything that reads its epoch; the non-finite check before
    anything saves; the best checkpoint, the step log and the backup; TensorBoard last (it reads
    the validation figures from `logs`). `validation`: (dataset, labels, label names); `run`:
    the RunDir this process writes; `config`: the TrainConfig. With --ema_momentum, validation
    and the best checkpoint see the weights' moving average (`EmaWeights`)."""
    advice = (
        f"Lower --learning_rate (now {config.learning_rate:g}) or --clip_norm (now "
        f"{config.clip_norm:g}) and start over with --overwrite."
    )
    counter = step_log.counter
    swap_in, swap_out = ([EmaWeights()], [EmaWeights()]) if config.ema_momentum else ([], [])
    return [
        counter,
        EpochTimer(history),
        *swap_in,
        F1Callback(history, counter, *validation),
        StopOnNonFiniteLoss(history, counter, run.best_weights, advice),
        BestEpoch(history, run.best_weights, run.training_csv, config.early_stopping_patience),
        *swap_out,
        step_log,
        backup,
        *([keras.callbacks.TensorBoard(str(run.logs))] if tensorboard else []),
    ]
