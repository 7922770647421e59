"""`ExportInfo`: an export's `assets/bert_keras.json`, what the model is and how it was trained.

Written by `bert_keras.export`, read by predict, evaluate and the model card. The JSON layout is
the one every export has had (the tokenizer's own description flattened into the top level), so
exports written before this class read back, and new ones read in older bert_keras.

>>> info = ExportInfo.read("runs/emotion/export/emotion/1")
>>> info.label_names[:2], info.training.test["accuracy"] > 0.9
(['sadness', 'joy'], True)
"""

import dataclasses
import json
from pathlib import Path

INFO = "assets/bert_keras.json"  # what makes a SavedModel a bert_keras export
FORMAT = "bert_keras export 1"


@dataclasses.dataclass
class TrainingInfo:
    """The run an export came from: its flags and, for a finished run, its figures."""

    run_dir: str = ""
    finished: bool = False
    flags: dict[str, str] = dataclasses.field(default_factory=dict)
    best_epoch: int | None = None
    epochs_run: int | None = None
    validation: dict | None = None
    test: dict | None = None
    train_label_counts: dict | None = None
    class_weight: dict | None = None
    thresholds: dict | None = None  # multi-label: tuned on validation (metrics.tune_thresholds)
    overlap: dict | None = None


@dataclasses.dataclass
class ExportInfo:
    model: str
    family: str
    dataset: str
    label_names: list[str]
    max_seq_length: int
    pooling: str
    # The in-graph tokenizer as it describes itself (`tokenizer` kind, vocab size and sha256,
    # normalisation), flattened into the JSON's top level.
    tokenizer: dict
    signatures: dict
    training: TrainingInfo
    versions: dict
    problem_type: str = "single_label"
    text_pair: bool = False
    thresholds: list[float] | None = None  # multi-label: the decision thresholds served
    format: str = FORMAT
    created: str = ""

    @classmethod
    def read(cls, export_dir) -> "ExportInfo":
        return cls.from_json(json.loads((Path(export_dir) / INFO).read_text()))

    @classmethod
    def from_json(cls, data: dict) -> "ExportInfo":
        names = {f.name for f in dataclasses.fields(cls)} - {"tokenizer"}
        known = {k: v for k, v in data.items() if k in names}
        known["training"] = TrainingInfo(**data.get("training", {}))
        tokenizer = {k: v for k, v in data.items() if k not in names}
        return cls(**known, tokenizer=tokenizer)

    def to_json(self) -> dict:
        """The JSON object, keys in the order every export has written them."""
        return {
            "format": self.format,
            "created": self.created,
            "model": self.model,
            "family": self.family,
            "dataset": self.dataset,
            "label_names": list(self.label_names),
            "problem_type": self.problem_type,
            **({"thresholds": self.thresholds} if self.thresholds is not None else {}),
            "max_seq_length": self.max_seq_length,
            "pooling": self.pooling,
            **self.tokenizer,
            "text_pair": self.text_pair,
            "signatures": self.signatures,
            "training": {
                k: v
                for k, v in dataclasses.asdict(self.training).items()
                if v is not None or self.training.finished or k in ("run_dir", "finished", "flags")
            },
            "versions": self.versions,
        }

    def text(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"
