"""Stage 6 (beside training): surviving a kill. The training state, backed up so that rerunning
the same command resumes where the last backup was made.

Every `--backup_every_steps` steps and at every epoch end `Backup` writes
`<output_dir>/backup/step-<N>/`: `state.weights.h5` (the model's weights and the optimizer's
variables, its step count included: Keras' `save_weights` holds them) and `state.json` (the
dropout layers' seed states, which `save_weights` leaves out, the epochs' metrics so far, seconds
spent, earlier resumptions). Keras'
own `BackupAndRestore` restarts an interrupted epoch from its first batch and writes in place;
here the folder is written under a hidden name and renamed, then the older one is removed, so a
kill at any moment leaves at least one whole backup, and the data pipeline starts at the exact
step (`pipeline.train_dataset(start=...)`).

>>> state = restore(run_dir, classifier)  # None without a backup
>>> state.position(steps_per_epoch)
(1, 40)
"""

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import keras

from bert_keras.errors import UsageError

FOLDER = "backup"
WEIGHTS = "state.weights.h5"
STATE = "state.json"


@dataclasses.dataclass
class State:
    step: int = 0  # optimizer steps done (global; counts all replicas' step once)
    epochs: list = dataclasses.field(default_factory=list)  # F1Callback.epochs so far
    training_seconds: float = 0.0
    first_step_seconds: float | None = None
    resumed_at: list = dataclasses.field(default_factory=list)  # steps of earlier resumptions
    seed_states: list = dataclasses.field(default_factory=list)  # dropout RNGs, model order

    def position(self, steps_per_epoch: int) -> tuple[int, int]:
        """(epoch, step in it), both 0-based: where training goes on."""
        return divmod(self.step, steps_per_epoch)


def latest(run_dir: Path) -> Path | None:
    """The newest whole backup of a run directory."""
    whole = [
        (int(p.name.removeprefix("step-")), p)
        for p in (run_dir / FOLDER).glob("step-*")
        if (p / STATE).is_file() and p.name.removeprefix("step-").isdigit()
    ]
    return max(whole)[1] if whole else None


def restore(run_dir: Path, model: keras.Model) -> State | None:
    """Loads the newest backup into the compiled model; its State, or None without a backup."""
    folder = latest(run_dir)
    if folder is None:
        return None
    with model.distribute_strategy.scope():  # the optimizer's variables are made here
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(str(folder / WEIGHTS))
        except ValueError:
            raise UsageError(
                f"the backup {folder} holds another model layout (written by an older "
                f"bert_keras, before the [CLS]-only last layer) and cannot resume; train again "
                f"with --overwrite."
            ) from None
        state = State(**json.loads((folder / STATE).read_text()))
        for variable, value in zip(_seed_states(model), state.seed_states, strict=True):
            variable.assign(value)
    if int(model.optimizer.iterations.numpy()) != state.step:
        raise RuntimeError(f"{folder}: the optimizer's step count is not {state.step}")
    return state


def remove(run_dir: Path):
    """Once the run is finished, its backup is no longer needed."""
    shutil.rmtree(run_dir / FOLDER, ignore_errors=True)


class Backup(keras.callbacks.Callback):
    """Writes a backup every `every` steps (0 = never within an epoch) and at each epoch end.

    `progress()` returns the rest of the State: epochs, seconds, first-step time, resumptions.
    Place it after the callbacks that update what `progress()` reports. Weights or a loss that
    are not finite are never backed up (StopOnNonFiniteLoss ends the run at the next step).
    """

    def __init__(self, folder: Path, every: int, progress):
        super().__init__()
        self.folder = folder
        self.every = every
        self.progress = progress
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.every and step % self.every == 0 and _finite(logs):
            self._save(step)

    def on_epoch_end(self, epoch, logs=None):
        if _finite(logs):
            self._save(self._step())

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _save(self, step: int):
        if step == self._last or not _all_finite(self.model.trainable_variables):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=".tmp-"))
        self.model.save_weights(str(tmp / WEIGHTS))
        seeds = [v.numpy().tolist() for v in _seed_states(self.model)]
        state = State(step=step, seed_states=seeds, **self.progress())
        (tmp / STATE).write_text(json.dumps(dataclasses.asdict(state), indent=1))
        final = self.folder / f"step-{step}"
        if final.exists():  # the same step backed up by an earlier attempt: identical state
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
        for old in self.folder.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self._last = step


def _finite(logs) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def _all_finite(variables) -> bool:
    return all(bool(keras.ops.all(keras.ops.isfinite(v.value))) for v in variables)


def _seed_states(model: keras.Model) -> list:
    """The state of every SeedGenerator (dropout masks) in the model, in a fixed order."""
    return [v for v in model.non_trainable_variables if "seed_generator_state" in v.path]
