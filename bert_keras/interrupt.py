"""SIGTERM and SIGINT (a preemptible VM's or Kubernetes' notice, Ctrl-C): the step under way is
finished, a backup written, and the run ends with one line saying how to resume (the same
command), exit status 143 / 130. A second signal ends the process at once.

Handlers are installed for both signals, so this holds when the trainer is PID 1 in a container
(where a signal without a handler is ignored).

>>> with Signals().handled() as signals:
...     model.fit(..., callbacks=[..., StopOnSignal(signals, backup, micro)])
"""

import contextlib
import os
import signal
import threading

import keras

from bert_keras import callbacks
from bert_keras.errors import Interrupted

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Signals:
    def __init__(self):
        self.received: int | None = None  # the first signal's number
        self.training = False  # a step is under way: the callback acts, not the handler

    @contextlib.contextmanager
    def handled(self):
        """Handles SIGTERM and SIGINT for the block (main thread only; elsewhere unchanged)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        before = {s: signal.signal(s, self._handle) for s in HANDLED}
        try:
            yield self
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.received is not None:
            os._exit(128 + signum)  # the second signal: at once
        self.received = signum
        if not self.training:
            raise Interrupted(signum, "outside a training step (from the last backup, if any)")


class StopOnSignal(keras.callbacks.Callback):
    """After the first signal, at the end of the next optimizer update (the last micro-batch of
    `micro`): a backup (`keep.save_now()`), then `Interrupted`, raised out of `fit` (Keras would
    otherwise end the epoch early and validate it as if it were whole). At an epoch's last step,
    after its validation and backup instead. Placed after `Backup`."""

    def __init__(self, signals: Signals, keep, micro: int):
        super().__init__()
        self.signals, self.keep, self.micro = signals, keep, micro

    def on_train_begin(self, logs=None):
        self.signals.training = True

    def on_train_end(self, logs=None):
        self.signals.training = False

    def on_train_batch_end(self, batch, logs=None):
        if self.signals.received is None or (batch + 1) % self.micro:
            return
        if callbacks.ends_epoch(self, batch):
            return  # its validation and backup come first (on_epoch_end)
        self.signals.training = False
        step = self.keep.save_now(logs)
        raise Interrupted(self.signals.received, f"at step {step}, backed up in {self.keep.folder}")

    def on_epoch_end(self, epoch, logs=None):
        if self.signals.received is not None:  # the epoch's backup is made (Backup runs first)
            self.signals.training = False
            where = f"after epoch {epoch + 1}, backed up in {self.keep.folder}"
            raise Interrupted(self.signals.received, where)
