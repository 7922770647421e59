"""Stage 6 (beside training): surviving a kill. The training state, backed up so that rerunning
the same command resumes where the last backup was made.

Every `--backup_every_steps` steps and at every epoch end `Backup` writes
`<output_dir>/backup/step-<N>/`: `state.weights.h5` (the model's weights and the optimizer's
variables, its step count included: Keras' `save_weights` holds them) and `state.json` (the
run's `History`: the epochs' metrics so far, seconds spent, earlier resumptions; and the dropout
layers' seed states, which `save_weights` leaves out). Keras' own `BackupAndRestore` restarts an
interrupted epoch from its first batch and writes in place; here the folder is written through
`durable` (synced to disk) and only the two newest are kept, so a kill or a power loss at any
moment leaves a whole backup, a damaged newest one falls back to the one before, and the data
pipeline starts at the exact step (`pipeline.train_dataset` gets the
batches from it on).

>>> state = restore(backup_folder, classifier)  # None without a backup
>>> state.step
1240
"""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import keras

from bert_keras import callbacks, durable
from bert_keras.errors import UsageError, cause
from bert_keras.results import History

WEIGHTS = "state.weights.h5"
STATE = "state.json"


@dataclasses.dataclass
class State:
    step: int = 0  # optimizer steps done (global; counts all replicas' step once)
    history: History = dataclasses.field(default_factory=History)
    seed_states: list = dataclasses.field(default_factory=list)  # dropout RNGs, model order
    fingerprints: dict = dataclasses.field(default_factory=dict)  # data splits', tokenizer's

    def to_json(self) -> dict:
        return {
            "step": self.step,
            **dataclasses.asdict(self.history),
            "seed_states": self.seed_states,
            "fingerprints": self.fingerprints,
        }

    @classmethod
    def from_json(cls, obj: dict) -> "State":
        fields = {f.name for f in dataclasses.fields(History)}
        history = History(**{k: v for k, v in obj.items() if k in fields})
        return cls(
            obj.get("step", 0), history, obj.get("seed_states", []), obj.get("fingerprints", {})
        )


KEPT = 2  # backups kept: the newest, and the one before in case the newest is damaged


def whole(folder: Path) -> list[Path]:
    """The whole backups in a run's backup folder, newest first."""
    found = [
        (int(p.name.removeprefix("step-")), p)
        for p in folder.glob("step-*")
        if (p / STATE).is_file() and p.name.removeprefix("step-").isdigit()
    ]
    return [p for _, p in sorted(found, reverse=True)]


def latest(folder: Path) -> Path | None:
    """The newest whole backup in a run's backup folder."""
    return next(iter(whole(folder)), None)


def restore(backups: Path, model: keras.Model, fingerprints: dict) -> State | None:
    """Loads the newest backup that reads back (a damaged one, say torn by a power loss, is
    passed over with a warning) into the compiled model; its State, or None without a
    backup. A backup of other data or another tokenizer (`fingerprints`) is refused."""
    found = whole(backups)
    for folder in found:
        try:
            return check_fingerprints(_load(folder, model), fingerprints, folder)
        except (OSError, json.JSONDecodeError, KeyError) as e:
            print(f"Warning: the backup {folder} is damaged ({cause(e)}); trying an older one.")
            shutil.rmtree(folder, ignore_errors=True)  # its step is written again when reached
    if found:
        raise UsageError(
            f"no backup in {backups} reads back (all damaged); start over with --overwrite."
        )
    return None


def check_fingerprints(state: State, now: dict, folder: Path) -> State:
    for name, was in state.fingerprints.items():
        if now.get(name, was) != was:
            what = "tokenizer (or --max_seq_length)" if name == "tokenizer" else f"{name} split"
            raise UsageError(
                f"the {what} is not the one the run in {folder.parent.parent} trained on "
                f"(fingerprint {now[name]}, was {was}): resuming would mix the two. Restore it, "
                f"or start over with --overwrite."
            )
    return state


def _load(folder: Path, model: keras.Model) -> State:
    with model.distribute_strategy.scope():  # the optimizer's variables are made here
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(str(folder / WEIGHTS))
        except ValueError:
            raise UsageError(
                f"the backup {folder} holds another model layout (written by an older "
                f"bert_keras) and cannot resume; train again with --overwrite."
            ) from None
        state = State.from_json(json.loads((folder / STATE).read_text()))
        for variable, value in zip(_seed_states(model), state.seed_states, strict=True):
            variable.assign(value)
    return state


def remove(folder: Path):
    """Once the run is finished, its backup is no longer needed."""
    shutil.rmtree(folder, ignore_errors=True)


class Backup(keras.callbacks.Callback):
    """Writes a backup every `every` steps (0 = never within an epoch) and at each epoch end,
    with the run's history as it stands (`callbacks.for_run` places it after the callbacks that
    write the history). Weights or a loss that are not finite are never backed up
    (StopOnNonFiniteLoss ends the run at the next step)."""

    def __init__(self, folder: Path, every: int, history: History, counter, fingerprints: dict):
        super().__init__()
        self.folder, self.counter, self.fingerprints = folder, counter, fingerprints
        self.every = every
        self.history = history
        self._last = None

    def on_train_begin(self, logs=None):
        self._seen = self._step()

    def on_train_batch_end(self, batch, logs=None):
        # Crossing a multiple of `every`, not landing on one: with --steps_per_execution=k
        # Keras calls back every k steps.
        step, seen = self._step(), self._seen
        self._seen = step
        if callbacks.ends_epoch(self, batch):
            return  # backed up at the epoch's end, with its validation
        if self.every and step // self.every > seen // self.every and _finite(logs):
            self._save(step)

    def on_epoch_end(self, epoch, logs=None):
        callbacks.validated(self.history, epoch, "Backup")
        self.save_now(logs)

    def save_now(self, logs=None) -> int:
        """A backup of this step (an epoch's end, SIGTERM); returns the step."""
        step = self._step()
        if _finite(logs):
            self._save(step)
        return step

    def _step(self) -> int:
        return self.counter.step

    def _save(self, step: int):
        if step == self._last or not callbacks.all_finite(self.model.trainable_variables):
            return
        seeds = [v.numpy().tolist() for v in _seed_states(self.model)]
        state = State(step, self.history, seeds, self.fingerprints)

        def fill(tmp: Path):
            self.model.save_weights(str(tmp / WEIGHTS))
            (tmp / STATE).write_text(json.dumps(state.to_json(), indent=1))

        # The same step backed up by an earlier attempt holds the identical state: kept.
        durable.write_folder(
            self.folder, fill, durable.unless_present(self.folder / f"step-{step}")
        )
        # Older ones go only now that the new one is on disk (durable).
        kept = whole(self.folder)[:KEPT]
        for old in self.folder.glob("step-*"):
            if old not in kept:
                shutil.rmtree(old, ignore_errors=True)
        self._last = step


def _finite(logs) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def _seed_states(model: keras.Model) -> list:
    """The state of every SeedGenerator (dropout masks) in the model, in a fixed order."""
    return [v for v in model.non_trainable_variables if "seed_generator_state" in v.path]
