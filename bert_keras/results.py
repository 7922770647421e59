"""What a run learned and measured: the schema of `metrics.json`, and the history of epochs
that the training callbacks share.

Metrics of a split (`metrics.split_metrics`) are dicts with `loss`, `examples` and the problem
type's figures (`micro_f1`, `macro_f1`, `per_class_f1` by label name, ...; regression `pearson`,
`spearman`, `mse`, `mae`). An epoch is
`{"epoch": n (1-based), "train": Keras' training logs, "validation": metrics}`.

>>> results = Results.read(run_dir / "metrics.json")
>>> results.best()["validation"]["micro_f1"], results.test["macro_f1"]
(0.9135, 0.8901)
"""

import dataclasses
import json
import math
from pathlib import Path

from bert_keras import durable
from bert_keras.task import SINGLE_LABEL, Task


@dataclasses.dataclass
class History:
    """The run so far, shared by the callbacks that write it (F1Callback appends the epochs,
    EpochTimer the seconds) and those that read it (BestEpoch, Backup); a backup stores it, and
    a resumed run starts from it."""

    epochs: list[dict] = dataclasses.field(default_factory=list)
    training_seconds: float = 0.0
    first_step_seconds: float | None = None
    resumed_at: list[int] = dataclasses.field(default_factory=list)  # steps of resumptions
    monitor: str = "micro_f1"  # the validation metric that picks the best epoch (Task.monitor)

    def best(self) -> dict | None:
        """The epoch with the best validation `monitor` (the earliest of equals); an epoch whose
        validation loss is not finite never is."""
        return best_epoch(self.epochs, self.monitor)

    def epochs_since_best(self) -> int:
        best = self.best()
        return len(self.epochs) - best["epoch"] if best else 0


def best_epoch(epochs: list[dict], monitor: str = "micro_f1") -> dict | None:
    sane = [e for e in epochs if math.isfinite(e["validation"]["loss"])]
    sign = -1 if monitor in LOWER_IS_BETTER else 1
    return max(sane, key=lambda e: sign * e["validation"][monitor], default=None)


LOWER_IS_BETTER = frozenset({"mse", "mae", "loss"})


@dataclasses.dataclass
class Speed:
    training_seconds: float
    training_examples_per_second: float
    real_tokens_per_second: float
    peak_memory_mb: float
    replicas: int = 1
    policy: str = "float32"  # the Keras dtype policy trained in
    seconds_to_first_step: float | None = None  # from the command to the end of the first step


@dataclasses.dataclass
class Results:
    """metrics.json: written last, its presence marks a run finished. Fields with a default
    came later: older runs' files read back with it."""

    dataset: str
    model: str
    parameters: int
    label_names: list[str]  # regression: the name of the number predicted
    best_epoch: int
    epochs: list[dict]
    test: dict  # metrics of the test split, from the best checkpoint
    speed: Speed
    versions: dict[str, str]
    train_label_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    class_weight: dict[str, float] | None = None  # by label name; None without --class_weight
    resumed_at_steps: list[int] = dataclasses.field(default_factory=list)
    final_weights_sha256: str = ""  # equal on every worker of a multi-worker run
    export: str = ""  # the SavedModel's version folder
    exports: dict[str, str] = dataclasses.field(default_factory=dict)  # each --export_formats'
    wall_seconds: float = 0.0
    problem_type: str = SINGLE_LABEL
    # Multi-label: {"global": t, "per_label": {name: t}} tuned on validation (the export uses
    # the per-label ones), and "test": micro- and macro-F1 at 0.5, global and per-label.
    thresholds: dict | None = None
    overlap: dict[str, int] = dataclasses.field(default_factory=dict)  # "train/test": texts
    # Steps whose update float16 loss scaling skipped (gradients not finite), in the whole run.
    skipped_updates: int = 0
    # sha256 (16 hex) of each split's rows and of the tokenizer (`data`, `tokenize.fingerprint`)
    fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def task(self) -> Task:
        return Task(self.problem_type, tuple(self.label_names))

    def best(self) -> dict:
        return next(e for e in self.epochs if e["epoch"] == self.best_epoch)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "Results":
        known = {f.name for f in dataclasses.fields(cls)} - {"speed"}
        speed = Speed(**{k: v for k, v in obj["speed"].items() if k in _SPEED})
        return cls(**{k: v for k, v in obj.items() if k in known}, speed=speed)

    @classmethod
    def read(cls, path: Path) -> "Results":
        return cls.from_json(json.loads(path.read_text()))

    def write(self, path: Path):
        durable.write_json(path, self.to_json())


_SPEED = {f.name for f in dataclasses.fields(Speed)}
