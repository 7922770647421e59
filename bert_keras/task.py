"""What a run learns: one label per text, any number of labels per text, or a number.

`Task` is the one source of truth for the problem type and the label names: the data stage
decides it (`data.load`), the run directory records it (`labels.txt`, `task.json`), and every
later stage (loss, metrics, reports, the export's outputs) asks it. A regression task has one
"label name": the name of the number it predicts (its column's).

>>> task = Task(MULTI_LABEL, ("anger", "joy"))
>>> task.outputs, task.monitor
(2, 'micro_f1')
"""

import dataclasses
import json
from pathlib import Path

from bert_keras import durable
from bert_keras.errors import UsageError

SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label", "multi_label", "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
# What a multi-label output predicts before thresholds are tuned (an unfinished run's export).
DEFAULT_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Task:
    problem_type: str
    label_names: tuple[str, ...]

    def __post_init__(self):
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"unknown problem type {self.problem_type!r}")
        object.__setattr__(self, "label_names", tuple(self.label_names))
        for name in self.label_names:
            if len(name.splitlines()) > 1 or name != name.strip("\n\r"):
                raise UsageError(
                    f"the label {name!r} holds a line break, which labels.txt (a label a line) "
                    f"cannot keep; rename it in the data, or name the labels with --label_names."
                )

    @property
    def outputs(self) -> int:
        """Units of the model's last layer."""
        return len(self.label_names)

    @property
    def multi_label(self) -> bool:
        return self.problem_type == MULTI_LABEL

    @property
    def regression(self) -> bool:
        return self.problem_type == REGRESSION

    @property
    def monitor(self) -> str:
        """The validation metric that picks the best epoch (`results.best_epoch`). A regression's
        is its squared error, lower is better: a score of the right order but the wrong scale
        can have a high correlation."""
        return "mse" if self.regression else "micro_f1"

    @property
    def monitor_name(self) -> str:
        return "mean squared error" if self.regression else "micro-F1"

    def describe(self) -> str:
        """For the log: what is learned, and how."""
        if self.regression:
            return f"regression of `{self.label_names[0]}` (mean squared error)"
        if self.multi_label:
            return f"multi-label, {self.outputs} labels (a sigmoid each, binary cross-entropy)"
        return f"single-label, {self.outputs} labels (softmax, cross-entropy)"

    def to_json(self) -> dict:
        return {"problem_type": self.problem_type, "label_names": list(self.label_names)}

    def write(self, folder: Path):
        """`labels.txt` (the names, one a line, in id order: what TF Serving users read) and
        `task.json` (the problem type)."""
        durable.write_text(folder / "labels.txt", "\n".join(self.label_names) + "\n")
        durable.write_json(folder / "task.json", {"problem_type": self.problem_type})

    @classmethod
    def read(cls, folder: Path) -> "Task":
        """What `write` wrote; a folder without task.json is single-label (older runs)."""
        names = (folder / "labels.txt").read_text().splitlines()
        about = folder / "task.json"
        kind = json.loads(about.read_text())["problem_type"] if about.is_file() else SINGLE_LABEL
        return cls(kind, tuple(names))
