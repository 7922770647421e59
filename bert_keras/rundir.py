"""The run directory: every path of one run, what state it is in, and reading a run back.

A run is finished when `metrics.json` exists: it is written last, after the test evaluation and
the export. A run without it is unfinished: rerunning its command resumes it from `backup/` (or
starts over when no backup was made yet). Every file is written through `durable`, so a kill
leaves the old version of each or the new one.

    <output_dir>/
      run.flags        flagfile that reproduces the run (python -m bert_keras.train --flagfile=...)
      labels.txt       label names, one a line, in id order (regression: the score's name)
      task.json        the problem type (single_label, multi_label, regression)
      checkpoints/     best.weights.h5 (best validation micro-F1)
      backup/          step-<N>/: the state to resume from (until metrics.json is written)
      logs/            training.csv, steps.csv (loss per step), TensorBoard events
      reports/test/    REPORT.md, classification report, confusion matrix and F1 PNGs
      export/<name>/1/ the SavedModel, with its MODEL_CARD.md
      metrics.json     per-epoch validation metrics, test metrics, speed, versions
      tracking.json    the ids of the run in MLflow and W&B (--report_to), to resume it there

>>> run = RunDir("runs/emotion")
>>> run.config().training.learning_rate, run.label_names()[:2], run.results().test["macro_f1"]
(0.0001, ['sadness', 'joy'], 0.8901)
"""

import contextlib
import fcntl
import os
import platform
import shutil
import socket
import time
from importlib import metadata
from pathlib import Path

from bert_keras import durable
from bert_keras.config import RunConfig
from bert_keras.errors import UsageError
from bert_keras.results import Results
from bert_keras.task import Task

LIBRARIES = (
    "tensorflow",
    "keras",
    "keras-hub",
    "tensorflow-text",
    "transformers",
    "tokenizers",
    "datasets",
    "scikit-learn",
    "numpy",
    "absl-py",
)

NEW, RESUME, DONE = "new", "resume", "finished"
TRACKING_FILE = "tracking.json"  # the ids of a run (or a search) in MLflow and W&B


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.flags = self.path / "run.flags"  # present in every run directory, finished or not
        self.labels = self.path / "labels.txt"
        self.metrics = self.path / "metrics.json"
        self.best_weights = self.path / "checkpoints" / "best.weights.h5"
        self.backup = self.path / "backup"
        self.logs = self.path / "logs"
        self.training_csv = self.logs / "training.csv"
        self.steps_csv = self.logs / "steps.csv"
        self.export_base = self.path / "export"
        self.tracking = self.path / TRACKING_FILE

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:  # where a path is taken, a RunDir is its own
        return str(self.path)

    def report_dir(self, split: str, dataset: str | None = None) -> Path:
        """The trainer's report of a split; `python -m bert_keras.evaluate`'s, named for the
        data set too, beside it (never over it)."""
        return self.path / "reports" / (f"{split}-{dataset}" if dataset else split)

    # === Before a run: what it does with this directory ===

    def check(self, config: RunConfig, has_backup: bool) -> str:
        """NEW (start here), RESUME (its unfinished run of the same flags, from the backup) or
        DONE (its finished run of the same flags: nothing to do), decided before any work.
        Refuses a directory this run must not write into."""
        name = f"--output_dir={self.path}"
        if not self.path.is_dir() or not any(self.path.iterdir()):
            return NEW
        if not self.flags.is_file():
            raise UsageError(
                f"{name} is not empty and is not a bert_keras run directory; choose an empty or "
                f"new directory."
            )
        if config.output.overwrite:
            return NEW
        finished = self.metrics.is_file()
        changed = _summary(config.changes_from(self.config()))
        if changed and finished:
            raise UsageError(
                f"{name} holds a finished run with other flags ({changed}); pass --overwrite to "
                f"replace it, or choose another --output_dir."
            )
        if changed:
            raise UsageError(
                f"{name} holds an unfinished run with other flags ({changed}); resume it with "
                f"--flagfile={self.flags}, pass --overwrite to start over, or choose another "
                f"--output_dir."
            )
        if finished:
            self.results()  # readable, or one line now
            return DONE
        return RESUME if has_backup else NEW

    def same_revision(self, config: RunConfig) -> RunConfig:
        """A hub id without a revision means, to the run this directory holds, the commit the
        run started with (its run.flags records it): a resume or a rerun reads the same files."""
        model = config.encoder.model
        if config.output.overwrite or not self.flags.is_file() or not model.startswith("hf://"):
            return config
        recorded = self.config().encoder.model
        if recorded.startswith(f"{model}@"):
            return config.replace(model=recorded)
        return config

    @contextlib.contextmanager
    def locked(self):
        """Holds the directory's lock for the block: another trainer given the same
        --output_dir meanwhile is refused with the holder's pid and host. The lock is a file
        beside the directory (`.<name>.lock`: the directory may not exist yet, and a fresh start
        empties it) locked with flock, which the kernel releases when its process dies: a
        stale lock cannot outlive a crash."""
        _check_writable(self.path, f"--output_dir={self.path}")
        lock = self.path.parent / f".{self.path.name}.lock"
        made = [p for p in [lock.parent, *lock.parent.parents] if not p.exists()]
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, f"--output_dir={self.path}")
        try:
            os.ftruncate(fd, 0)  # a crashed holder's line
            os.write(
                fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.ctime()}".encode()
            )
            yield
        finally:
            lock.unlink(missing_ok=True)  # before the unlock: a waiter then locks a new file
            os.close(fd)
            for folder in made:  # made for the lock alone (bad input): not left behind
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def start(self, state: str, config: RunConfig, task: Task):
        """A fresh run directory in place of an unfinished (or, with --overwrite, any) run, or
        for RESUME the same one without the temporary files of interrupted writes; then the
        run's flags and labels. Earlier exports stay: the new one becomes the next version."""
        self.path.mkdir(parents=True, exist_ok=True)
        hidden = [*self.path.glob(durable.HIDDEN + "*"), *self.path.glob(f"*/{durable.HIDDEN}*")]
        doomed = hidden if state == RESUME else list(self.path.iterdir())
        for path in doomed:
            if path.parent != self.export_base and path != self.export_base:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        durable.write_text(self.flags, config.flagfile())
        task.write(self.path)
        self.logs.mkdir(exist_ok=True)
        self.best_weights.parent.mkdir(exist_ok=True)

    # === Reading a run back ===

    def config(self) -> RunConfig:
        """The configuration the run was started with (its run.flags)."""
        if not self.path.is_dir():
            raise UsageError(
                f"--run_dir={self.path}: no such directory; give a run's --output_dir."
            )
        if not self.flags.is_file():
            raise UsageError(
                f"--run_dir={self.path} is not a bert_keras run directory (no {self.flags.name}); "
                f"give the --output_dir of a training run."
            )
        return RunConfig.parse(self.flags.read_text().splitlines())

    def label_names(self) -> list[str]:
        return self.labels.read_text().splitlines()

    def task(self) -> Task:
        return Task.read(self.path)

    def results(self) -> Results | None:
        """metrics.json, or None for an unfinished run; a UsageError if it cannot be read."""
        if not self.metrics.is_file():
            return None
        try:
            return Results.read(self.metrics)
        except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
            raise UsageError(
                f"{self.metrics} is damaged ({type(e).__name__}: {str(e)[:100]}); the run's "
                f"other files are as it left them: put back a copy of metrics.json, or pass "
                f"--overwrite to train the run again."
            ) from None

    def checkpoint(self):
        """The run's pretrained checkpoint (checked as at training)."""
        from bert_keras import checkpoint  # keras-hub and transformers: only when asked for

        encoder = self.config().encoder
        return checkpoint.resolve(encoder.model, encoder.max_seq_length)

    def best_checkpoint(self) -> Path:
        """The best checkpoint's path; a UsageError while the run has none."""
        if not self.best_weights.is_file():
            raise UsageError(
                f"--run_dir={self.path} has no {self.best_weights.relative_to(self.path)} (the "
                f"run ended before its first validation); train it first."
            )
        return self.best_weights

    def load_classifier(self, ckpt=None, with_backbone: bool = False):
        """The best checkpoint as a float32 classifier with dropout off, for export and
        inference, whatever precision the run trained in (`with_backbone`: and its backbone)."""
        from bert_keras import model

        weights, config = self.best_checkpoint(), self.config()
        ckpt = ckpt or self.checkpoint()
        num_labels = len(self.label_names())
        return model.load_best(weights, ckpt, config.encoder.pooling, num_labels, with_backbone)


def _existing(path: Path) -> Path:
    """The path, or the nearest folder above it that exists."""
    return next(p for p in [path, *path.absolute().parents] if p.exists())


def _check_writable(path: Path, name: str):
    """The directory, or the nearest folder above it that exists, can be written to."""
    found = _existing(path)
    if found.is_file():
        raise UsageError(f"{name}: {found} is a file; give a directory.")
    if not os.access(found, os.W_OK | os.X_OK):
        raise UsageError(
            f"{name}: {found} is not writable by this user; choose another --output_dir or fix "
            f"its permissions."
        )


def check_room(path: Path, needed: int):
    """Room on the directory's disk for `needed` bytes (a best checkpoint and two backups)."""
    free = shutil.disk_usage(_existing(path)).free
    if free < needed:
        raise UsageError(
            f"--output_dir={path}: {free / 2**30:.1f} GiB free on its disk, and the run needs "
            f"about {needed / 2**30:.1f} GiB (the best checkpoint and two backups); free some "
            f"space or choose another --output_dir."
        )


def _acquire(lock: Path, name: str) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read_text().strip() if lock.exists() else ""
            os.close(fd)
            raise UsageError(
                f"{name} is in use by another bert_keras run ({holder or 'starting'}); wait for "
                f"it to end, or choose another --output_dir."
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd  # locked, and still the file at that path
        os.close(fd)  # its holder removed it meanwhile: lock the new one


def _summary(changes: list[str]) -> str:
    return ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")


def versions() -> dict:
    """Python's and the libraries' versions, as recorded in metrics.json and exports."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found
