"""Stage 1: a Hugging Face text-classification data set, checked, with its label names.

`load` returns train/validation/test splits with the columns `text` (str), `label` (int id in
[0, num_labels)) and, for sentence pairs, `text_pair` (str), and the label names: the one source
of truth every later stage and artifact reads them from. Names come from --label_names, else the
data set's ClassLabel, else a labels.txt beside the split files, else the sorted string labels.
A data set without a validation split gets one carved off train (stratified, seeded).

>>> data = load("emotion", max_train_examples=1000, max_eval_examples=100)
>>> data.label_names
['sadness', 'joy', 'love', 'anger', 'fear', 'surprise']
>>> data.splits["train"].num_rows, data.splits["validation"].num_rows
(1000, 100)
"""

import dataclasses
import os
from pathlib import Path

import datasets
import numpy as np

from bert_keras.config import RunConfig, dataset_name
from bert_keras.errors import UsageError, cause

SPLITS = ("train", "validation", "test")
# File suffix -> the datasets builder that reads it, in order of preference.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# The tutorial drew its subsets with this seed; keeping it gives the same 1,000 rows.
SUBSET_SEED = 42
EMOTION_DIR = Path(__file__).parent / "resources" / "emotion"


@dataclasses.dataclass
class LabeledData:
    name: str
    splits: datasets.DatasetDict
    label_names: list[str]


def from_config(config: RunConfig, dataset: str | None = None, split: str | None = None):
    """The data a run's config names (or `dataset`, read with the run's column flags). With
    `split`, a report of that split: the test split is always whole."""
    subset = split is None or split != "test"
    return load(
        dataset or config.dataset,
        config.text_column,
        config.label_column,
        config.max_train_examples,
        config.max_eval_examples if subset else 0,
        text_pair_column=config.text_pair_column,
        label_names=config.label_names,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
    )


def load(
    dataset: str,
    text_column: str = "text",
    label_column: str = "label",
    max_train_examples: int = 0,
    max_eval_examples: int = 0,
    text_pair_column: str = "",
    label_names: list[str] | str = (),
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> LabeledData:
    name = dataset_name(dataset)
    if dataset == "emotion" and not os.path.exists(dataset):
        dataset = str(EMOTION_DIR)
    splits, from_file = _read(dataset)
    columns = {"text_column": text_column, "label_column": label_column}
    if text_pair_column:
        columns["text_pair_column"] = text_pair_column
    for split in splits:
        _check_columns(splits[split], split, columns)
    if isinstance(label_names, str):
        label_names = [n for n in label_names.split(",") if n]
    names = _label_names(splits, label_column, list(label_names) or from_file, dataset)
    splits = datasets.DatasetDict({s: _canonical(splits[s], s, columns, names) for s in splits})
    if "validation" not in splits:
        splits = _carve_validation(splits, validation_fraction, seed)
    splits["train"] = _subset(splits["train"], max_train_examples)
    splits["validation"] = _subset(splits["validation"], max_eval_examples)
    return LabeledData(name=name, splits=splits, label_names=names)


def _carve_validation(splits, fraction: float, seed: int) -> datasets.DatasetDict:
    """A validation split from train: `fraction` of each label's rows, drawn with `seed`."""
    train = splits["train"]
    labels = np.asarray(train.with_format("arrow")["label"])
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        held.extend(rows[: max(1, round(fraction * len(rows)))] if len(rows) > 1 else [])
    held = np.sort(np.asarray(held, dtype=np.int64))
    keep = np.setdiff1d(np.arange(train.num_rows), held)
    print(
        f"The data set has no validation split: {len(held):,} of {train.num_rows:,} train rows "
        f"({fraction:.0%} of each label, seed {seed}) are set aside as validation "
        f"(--validation_fraction)."
    )
    return datasets.DatasetDict(
        {"train": train.select(keep), "validation": train.select(held), "test": splits["test"]}
    )


def _read(dataset: str) -> tuple[datasets.DatasetDict, list[str] | None]:
    """Local folder first; then the hub, for ids that are not paths."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        return _read_folder(path)
    if path.exists():
        raise UsageError(
            f"--dataset={dataset} is a file; give a folder holding train, validation and test "
            f"files ({', '.join(BUILDERS)})."
        )
    if dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        raise UsageError(
            f"--dataset={dataset}: no such folder. Give a folder holding train, validation and "
            f"test files, `emotion`, or a Hugging Face hub id."
        )
    try:
        splits = datasets.load_dataset(dataset)
    except Exception as e:  # The hub raises many types: offline, missing repo, auth.
        raise UsageError(
            f"--dataset={dataset}: no such local folder, and loading it from the Hugging Face "
            f"Hub failed ({cause(e)}). Give a local "
            f"folder, or use `emotion` offline."
        ) from None
    missing = [s for s in ("train", "test") if s not in splits]
    if missing:
        raise UsageError(
            f"--dataset={dataset} has no {' or '.join(missing)} split (it has "
            f"{', '.join(splits)}); give a data set with train and test splits (and validation, "
            f"or it is carved off train)."
        )
    return splits, None


def _read_folder(folder: Path) -> tuple[datasets.DatasetDict, list[str] | None]:
    splits = {}
    for split in SPLITS:
        files = [folder / f"{split}{suffix}" for suffix in BUILDERS]
        found = [f for f in files if f.is_file()]
        if not found and split == "validation":
            continue  # carved off train later
        if not found:
            present = sorted(p.name for p in folder.iterdir() if p.is_file())
            raise UsageError(
                f"--dataset={folder}: split `{split}` is missing: no {split}.jsonl, .json, .csv "
                f"or .parquet there (found: {', '.join(present) or 'nothing'}). Add the file."
            )
        file = found[0]
        if file.stat().st_size == 0:
            raise UsageError(f"split `{split}` is empty: {file} has no rows. Fill it or remove it.")
        try:
            ds = datasets.load_dataset(
                BUILDERS[file.suffix], data_files={split: str(file)}, split=split
            )
        except Exception as e:
            raise UsageError(
                f"cannot read {file} ({cause(e)}); check that it is valid {file.suffix[1:]}."
            ) from None
        if ds.num_rows == 0:
            raise UsageError(f"split `{split}` is empty: {file} has no rows. Fill it.")
        splits[split] = ds
    labels_txt = folder / "labels.txt"
    names = labels_txt.read_text().split("\n") if labels_txt.is_file() else None
    names = [n.strip() for n in names if n.strip()] if names else None
    return datasets.DatasetDict(splits), names


def _check_columns(ds: datasets.Dataset, split: str, columns: dict[str, str]):
    for flag, column in columns.items():
        if column not in ds.column_names:
            raise UsageError(
                f"split `{split}` has no column `{column}` (--{flag}); its columns are: "
                f"{', '.join(ds.column_names)}. Set --{flag} to one of them."
            )


def _label_names(splits, label_column: str, given: list[str] | None, dataset: str):
    feature = splits["train"].features[label_column]
    strings = getattr(feature, "dtype", None) in ("string", "large_string")
    if given and (len(set(given)) != len(given) or len(given) < 2):
        raise UsageError(
            f"label names {given} (--label_names or labels.txt): give two or more distinct names."
        )
    if given and not strings:
        return list(given)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if strings:
        values = set()
        for split in splits:
            values.update(v for v in splits[split][label_column] if v is not None)
        if given:
            unknown = sorted(values - set(given))
            if unknown:
                raise UsageError(
                    f"labels {unknown[:5]} are not among the label names {given}; add them to "
                    f"--label_names (or labels.txt)."
                )
            return list(given)
        return sorted(values)
    raise UsageError(
        f"--dataset={dataset}: labels are ids but no names are known. Pass --label_names=a,b,c "
        f"(in id order), add a labels.txt beside the split files, or use string labels."
    )


def _canonical(ds, split, columns: dict[str, str], label_names) -> datasets.Dataset:
    """Rename to text/label(/text_pair), labels as int64 ids; reject rows no model can learn
    from.

    Only Arrow-backed operations, so that the datasets cache keeps what follows (tokenization)
    for the next run.
    """
    text_column, label_column = columns["text_column"], columns["label_column"]
    pair_column = columns.get("text_pair_column")
    ds = ds.select_columns([c for c in (text_column, pair_column, label_column) if c])
    for column in (text_column, pair_column) if pair_column else (text_column,):
        for row, text in enumerate(ds.data.table.column(column).to_pylist()):
            if not isinstance(text, str) or not text.strip():
                what = "null" if text is None else "empty" if isinstance(text, str) else repr(text)
                raise UsageError(
                    f"split `{split}` row {row} (0-based): the text in column `{column}` is "
                    f"{what}. Fix or drop that row."
                )
    raw = ds.data.table.column(label_column).to_pylist()
    index = {name: i for i, name in enumerate(label_names)}
    strings = any(isinstance(v, str) for v in raw)
    ids = np.asarray([index.get(v, -1) if strings else v if v is not None else -1 for v in raw])
    bad = np.flatnonzero((ids < 0) | (ids >= len(label_names)))
    if bad.size:
        row = int(bad[0])
        raise UsageError(
            f"split `{split}` row {row} (0-based): label {raw[row]!r} is outside the "
            f"{len(label_names)} labels [0, {len(label_names)}) ({', '.join(label_names)}); "
            f"{bad.size} rows are affected. Fix the labels or the label names (labels.txt)."
        )
    renames = ((text_column, "text"), (pair_column, "text_pair"), (label_column, "label"))
    ds = ds.rename_columns({c: n for c, n in renames if c and c != n})
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            **({"text_pair": datasets.Value("string")} if pair_column else {}),
            "label": datasets.Value("int64"),
        }
    )
    if strings:
        return ds.map(
            lambda batch: {"label": [index[v] for v in batch["label"]]},
            batched=True,
            features=features,
            desc=f"label ids ({split})",
        )
    return ds.cast(features)


def _subset(ds: datasets.Dataset, n: int) -> datasets.Dataset:
    if not n or n >= ds.num_rows:
        return ds
    return ds.shuffle(seed=SUBSET_SEED).select(range(n))
