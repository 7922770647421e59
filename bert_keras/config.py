"""One run's configuration, typed: built once from the trainer's flags, or from a run's
`run.flags`, and handed to every stage. Nothing after an entry point reads absl's FLAGS.

>>> config = RunConfig.parse(["--dataset=emotion", "--epochs=2"])
>>> config.epochs, config.output_path
(2, PosixPath('runs/emotion'))
>>> RunConfig.parse(config.flagfile().splitlines()) == config
True
"""

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from bert_keras.errors import UsageError, cause, no_arguments
from bert_keras.flags import TRAINER

# Flags that may change between a run and its resumption: they do not change what is learned.
RESUMABLE_CHANGES = frozenset({"backup_every_steps", "strategy", "num_cpu_devices"})
# Flags that say what to do with a run directory, not what the run is: not in its run.flags.
NOT_RECORDED = frozenset({"overwrite"})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every flag of bert_keras/flags.py, by the same name and with its parsed type."""

    # === Data ===
    dataset: str
    dataset_config: str
    train_split: str
    validation_split: str
    test_split: str
    text_column: str
    label_column: str
    label_columns: tuple[str, ...]
    problem_type: str
    text_pair_column: str
    label_names: tuple[str, ...]
    validation_fraction: float
    test_fraction: float
    drop_overlap: bool
    max_train_examples: int
    max_eval_examples: int
    # === Model ===
    model: str
    pooling: str
    dropout: float
    max_seq_length: int
    # === Training ===
    batch_size: int
    epochs: int
    max_steps: int
    eval_every_steps: int
    eval_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    clip_norm: float
    layer_decay: float
    ema_momentum: float
    class_weight: str
    early_stopping_patience: int
    seed: int
    # === Devices and speed ===
    strategy: str
    num_cpu_devices: int
    mixed_precision: str
    jit_compile: bool
    steps_per_execution: int
    # === Surviving a kill; output ===
    backup_every_steps: int
    output_dir: str
    overwrite: bool
    export_name: str

    @classmethod
    def from_flags(cls, values: flags.FlagValues = TRAINER) -> "RunConfig":
        """From parsed flag values (an entry point's, after absl parsed the command line)."""
        fields = {}
        for field in dataclasses.fields(cls):
            value = values[field.name].value
            fields[field.name] = tuple(value) if isinstance(value, list) else value
        return cls(**fields)

    @classmethod
    def parse(cls, args: Sequence[str]) -> "RunConfig":
        """From `--name=value` arguments (a flagfile's lines; comments and blanks skipped), the
        other flags at their defaults. A private copy of the flags parses them: the process's
        own FLAGS are left as they are."""
        values = copy.deepcopy(TRAINER)
        values.unparse_flags()
        args = [a.strip() for a in args if a.strip() and not a.strip().startswith("#")]
        try:
            rest = values(["bert_keras", *args], known_only=False)
        except flags.Error as e:
            raise UsageError(
                f"bad flags ({cause(e)}); see python -m bert_keras.train --help."
            ) from None
        no_arguments(rest)
        return cls.from_flags(values)

    def flagfile(self) -> str:
        """The flags, one a line and sorted, as `--flagfile` reads them back."""
        values = copy.deepcopy(TRAINER)
        lines = []
        for name in self.recorded():
            value = getattr(self, name)
            values[name].value = list(value) if isinstance(value, tuple) else value
            lines.append(values[name].serialize())
        return "\n".join(sorted(lines)) + "\n"

    def recorded(self) -> dict[str, str]:
        """The flags a run records (run.flags, reports, exports), by name, as text."""
        return {
            f.name: _shown(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in NOT_RECORDED
        }

    def changes_from(self, before: "RunConfig") -> list[str]:
        """`--name=now (was before)` for each flag that changes what is learned."""
        ignored = RESUMABLE_CHANGES | NOT_RECORDED
        return [
            f"--{f.name}={_shown(getattr(self, f.name))} (was {_shown(getattr(before, f.name))})"
            for f in dataclasses.fields(self)
            if f.name not in ignored and getattr(self, f.name) != getattr(before, f.name)
        ]

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @property
    def dataset_name(self) -> str:
        return dataset_name(self.dataset)

    @property
    def output_path(self) -> Path:
        """The run directory: --output_dir, else runs/<data set name>."""
        return Path(self.output_dir or f"runs/{self.dataset_name}")

    @property
    def model_name(self) -> str:
        """The export's model name (TF Serving's MODEL_NAME)."""
        return self.export_name or self.dataset_name

    @property
    def text_pair(self) -> bool:
        return bool(self.text_pair_column)


def dataset_name(dataset: str) -> str:
    """A short name for --dataset: the default run directory and export name."""
    return Path(dataset.rstrip("/")).name or "dataset"


def _shown(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(value) if isinstance(value, tuple) else str(value)
