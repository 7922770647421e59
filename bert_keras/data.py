"""Stage 1: a Hugging Face text-classification data set, checked, with its task.

`from_config` returns train/validation/test splits with the columns `text` (str), `label` and,
for sentence pairs, `text_pair` (str), and the `task.Task`: the problem type and the label names,
the one source of truth every later stage and artifact reads them from. `label` is an int id in
[0, labels) (single-label), a multi-hot float32 list of length labels (multi-label) or a float32
(regression). Label names come from --label_names, else the data set's ClassLabel, else a
labels.txt beside the data, else the sorted string labels; --label_columns names 0/1 columns.

Any layout `datasets.load_dataset(folder)` reads is read (docs/data.md). A data set without a
labelled test split gets one carved off train (--test_fraction), then one without a validation
split gets that (--validation_fraction): stratified, seeded. Texts found in more than one split
are counted (`overlap`), and with --drop_overlap removed from train.

>>> data = load("emotion", max_train_examples=1000, max_eval_examples=100)
>>> data.label_names
['sadness', 'joy', 'love', 'anger', 'fear', 'surprise']
>>> data.splits["train"].num_rows, data.splits["validation"].num_rows
(1000, 100)
"""

import dataclasses
import hashlib
import itertools
import json
import math
import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bert_keras.config import COMPRESSIONS, DataConfig
from bert_keras.errors import UsageError, cause
from bert_keras.task import MULTI_LABEL, REGRESSION, SINGLE_LABEL, Task

SPLITS = ("train", "validation", "test")
# The tutorial drew its subsets with this seed; keeping it gives the same 1,000 rows.
SUBSET_SEED = 42
EMOTION_DIR = Path(__file__).parent / "resources" / "emotion"
# Regression rows are stratified by these many quantile bins of their score.
SCORE_BINS = 10
CHUNK_ROWS = 100_000  # rows read at a time where a whole split is scanned
# A data file's loader in `datasets`, and its options, by the file's suffix.
FILE_FORMATS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


@dataclasses.dataclass
class LabeledData:
    name: str
    splits: datasets.DatasetDict
    task: Task
    overlap: dict[str, int] = dataclasses.field(default_factory=dict)  # "train/test": texts

    @property
    def label_names(self) -> list[str]:
        return list(self.task.label_names)


def load(dataset: str = "emotion", seed: int = 42, **flags) -> LabeledData:
    """The data set with the trainer's data flags (`flags`, by name) at their defaults."""
    if isinstance(flags.get("label_names"), str):
        flags["label_names"] = [n for n in flags["label_names"].split(",") if n]
    flags = {k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()}
    return from_config(DataConfig(dataset=dataset, **flags), seed)


def from_config(config: DataConfig, seed: int, split: str | None = None) -> LabeledData:
    """The data a run's data flags name; `seed` draws the splits carved off train. With
    `split`, a report of that split: the test split is always whole."""
    for role in ("validation", "test"):
        if config.train_split == getattr(config, f"{role}_split"):
            raise UsageError(
                f"--train_split={config.train_split} is also the {role} split "
                f"(--{role}_split): the model would be judged on rows it trained on; train on "
                f"another split."
            )
    raw, names_file = _read(config)
    splits = _choose_splits(raw, config)
    columns = _columns(config)
    for name, ds in splits.items():
        _check_columns(ds, name, columns)
    task = _task(splits["train"], config, names_file)
    print(f"Task: {task.describe()}.")
    splits = {s: _canonical(ds, s, config, task) for s, ds in splits.items()}
    for role in ("test", "validation"):
        if role not in splits:
            fraction = getattr(config, f"{role}_fraction")
            splits["train"], splits[role] = _carve(splits["train"], task, fraction, seed, role)
    _count_unlabelled(splits, task)
    if config.drop_overlap:
        splits["train"] = _drop_overlap(splits)
    subset = split is None or split != "test"
    splits["train"] = _subset(splits["train"], config.max_train_examples)
    splits["validation"] = _subset(splits["validation"], config.max_eval_examples if subset else 0)
    splits = datasets.DatasetDict({s: splits[s] for s in SPLITS})
    return LabeledData(config.name, splits, task, overlap(splits))


# === Reading ===


def _read(config: DataConfig) -> tuple[datasets.DatasetDict, list[str] | None]:
    """Split files given one by one; else a local folder (any layout datasets reads, and a
    labels.txt beside the files); then the hub, for ids that are not paths."""
    if config.files or config.validation_file or config.test_file:
        return _read_files(config), None
    dataset = config.dataset
    if dataset == "emotion" and not os.path.exists(dataset):
        dataset = str(EMOTION_DIR)
    path = Path(dataset).expanduser()
    if _file_format(dataset) and not path.exists():
        raise UsageError(f"{config.given}: no such file.")
    if not path.is_dir() and (dataset.startswith((".", "/", "~")) or dataset.count("/") > 1):
        raise UsageError(
            f"{config.given}: no such folder or file. Give a folder holding train, validation "
            f"and test files, a data file, `emotion`, or a Hugging Face hub id."
        )
    where = (
        "" if path.is_dir() else "no such local folder, and loading it from the Hugging Face Hub"
    )
    source = str(path.resolve()) if path.is_dir() else dataset
    splits = _load(config, where, source, config.dataset_config or None)
    names = None
    labels_txt = path / "labels.txt"
    if path.is_dir() and labels_txt.is_file():
        text = labels_txt.read_text(encoding="utf-8-sig")  # a byte-order mark is not a name
        names = [n.strip() for n in text.splitlines() if n.strip()] or None
    return splits, names


def _read_files(config: DataConfig) -> datasets.DatasetDict:
    """`--train_file` (or `--dataset=<file>`) and the other splits' files: one format, read by
    datasets' loader of that format."""
    files = config.files
    if "train" not in files:
        raise UsageError(
            "--validation_file and --test_file go with a train file: give --train_file=<file> "
            "(or --dataset=<file>) too."
        )
    if config.train_file and config.dataset not in ("emotion", config.train_file):
        raise UsageError(
            f"--train_file={config.train_file} and --dataset={config.dataset} both name the "
            f"data; give one of them."
        )
    flag = {"train": config.given.split("=")[0]} | {s: f"--{s}_file" for s in SPLITS[1:]}
    for split, file in files.items():
        if not Path(file).expanduser().is_file():
            raise UsageError(f"{flag[split]}={file}: no such file.")
    kinds = {split: _file_format(file) for split, file in files.items()}
    if None in kinds.values() or len({str(FILE_FORMATS[k]) for k in kinds.values()}) > 1:
        shown = ", ".join(f"{flag[s]}={files[s]}" for s in files)
        raise UsageError(
            f"{shown}: give files of one format, named by it: .csv, .tsv, .json, .jsonl or "
            f".parquet (compressed or not: .gz, .bz2, .xz, .zst)."
        )
    builder, options = FILE_FORMATS[kinds["train"]]
    paths = {s: str(Path(f).expanduser().resolve()) for s, f in files.items()}
    return _load(config, "", builder, data_files=paths, **options)


def _file_format(file: str) -> str | None:
    path = Path(file)
    if path.suffix in COMPRESSIONS:
        path = path.with_suffix("")
    return path.suffix if path.suffix in FILE_FORMATS else None


def _load(config: DataConfig, where: str, *args, **options) -> datasets.DatasetDict:
    """`datasets.load_dataset(*args, **options)`, its errors one line each."""
    try:
        return datasets.load_dataset(*args, **options)
    except ValueError as e:
        if "corresponds to no data" in str(e):  # an empty split file
            split = str(e).split('"')[1] if str(e).count('"') >= 2 else "?"
            raise UsageError(
                f"split `{split}` is empty: {config.given} has no rows of it. Fill it or remove it."
            ) from None
        if "config" in str(e).lower() and ("Available" in str(e) or "pick one" in str(e)):
            message = _configs_message(e, config.dataset_config)
            raise UsageError(f"{config.given}: {message}") from None
        raise _unreadable(config.given, where, e) from None
    except Exception as e:  # The hub raises many types: offline, missing repo, auth.
        raise _unreadable(config.given, where, e) from None


def _configs_message(e: ValueError, config_name: str) -> str:
    available = str(e).split("[", 1)[-1].split("]", 1)[0] if "[" in str(e) else ""
    what = f"has no config `{config_name}`" if config_name else "has several configs"
    return f"{what}; pass --dataset_config= one of {available}."


def _unreadable(given: str, where: str, e: Exception) -> UsageError:
    if where:
        return UsageError(
            f"{given}: {where} failed ({cause(e)}). Give a local folder, or use `emotion` offline."
        )
    return UsageError(
        f"{given}: cannot read it ({cause(e)}); check that its files are valid and "
        f"of one format (.jsonl, .json, .csv, .tsv, .parquet, .txt)."
    )


def _choose_splits(raw: datasets.DatasetDict, config: DataConfig) -> dict:
    """{"train", and "validation" and "test" where the data has them} by the split flags. A split
    named by a flag at its default may be missing (it is carved off train); one named otherwise
    must exist. A test split without labels (all -1 or null) counts as missing."""
    chosen = {}
    for role in SPLITS:
        name = getattr(config, f"{role}_split")
        if name in raw:
            chosen[role] = raw[name]
        elif role == "train" or name != DataConfig.__dataclass_fields__[f"{role}_split"].default:
            raise UsageError(
                f"{config.given} has no split `{name}` (--{role}_split); its splits "
                f"are: {', '.join(raw)}. Set --{role}_split to one of them."
            )
    if "validation" in chosen and config.validation_split == config.test_split:
        del chosen["validation"]  # --test_split=validation: validation is carved off train
    for role, ds in chosen.items():
        if ds.num_rows == 0:
            raise UsageError(
                f"split `{getattr(config, f'{role}_split')}` is empty: {config.given} has no "
                f"rows of it. Fill it or remove it."
            )
    if "test" in chosen and not _labelled(chosen["test"], config):
        print(f"The test split `{config.test_split}` has no labels (-1 or null): not used.")
        del chosen["test"]
    return chosen


def _labelled(ds: datasets.Dataset, config: DataConfig) -> bool:
    column = config.label_columns[0] if config.label_columns else config.label_column
    if column not in ds.column_names:
        return True  # _check_columns says what is missing
    values = _values(ds, column)
    return any(v is not None and not (isinstance(v, int) and v < 0) for v in values)


def _columns(config: DataConfig) -> dict[str, str | tuple]:
    columns = {"text_column": config.text_column}
    if config.text_pair_column:
        columns["text_pair_column"] = config.text_pair_column
    if config.label_columns:
        columns.update({f"label_columns={c}": c for c in config.label_columns})
    else:
        columns["label_column"] = config.label_column
    return columns


def _check_columns(ds: datasets.Dataset, split: str, columns: dict[str, str]):
    for flag, column in columns.items():
        if column not in ds.column_names:
            flag = flag.split("=")[0]
            raise UsageError(
                f"split `{split}` has no column `{column}` (--{flag}); its columns are: "
                f"{', '.join(ds.column_names)}. Set --{flag} to one of them."
            )


# === The task: problem type and label names ===


def _task(train: datasets.Dataset, config: DataConfig, names_file) -> Task:
    given = list(config.label_names) or names_file
    if given and (len(set(given)) != len(given) or len(given) < 2):
        raise UsageError(
            f"label names {given} (--label_names or labels.txt): give two or more distinct names."
        )
    if config.label_columns:
        if config.problem_type not in ("auto", MULTI_LABEL):
            raise UsageError(
                f"--label_columns gives multi-label data; --problem_type={config.problem_type} "
                f"cannot learn it. Use --problem_type=multi_label (or auto)."
            )
        return Task(MULTI_LABEL, tuple(config.label_columns))
    feature = train.features[config.label_column]
    kind = _detected(feature, train, config.label_column)
    wanted = config.problem_type if config.problem_type != "auto" else kind
    if wanted == REGRESSION:
        return Task(REGRESSION, (config.label_column,))
    if kind == REGRESSION:
        raise UsageError(
            f"column `{config.label_column}` holds numbers with fractions (a regression target); "
            f"--problem_type={wanted} needs label ids or names. Use --problem_type=regression (or "
            f"auto)."
        )
    if kind == MULTI_LABEL and wanted == SINGLE_LABEL:
        raise UsageError(
            f"column `{config.label_column}` holds label lists (multi-label data); "
            f"--problem_type=single_label needs one label per row. Use --problem_type=multi_label "
            f"(or auto)."
        )
    inner = feature.feature if kind == MULTI_LABEL and hasattr(feature, "feature") else feature
    return Task(wanted, tuple(_label_names(train, config, inner, given)))


def _detected(feature, train: datasets.Dataset, column: str) -> str:
    """The problem type the label column's values say."""
    if isinstance(feature, datasets.List | datasets.Sequence | datasets.LargeList):
        return MULTI_LABEL
    if isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        return REGRESSION
    if type(feature).__name__ == "Json":  # mixed value types: datasets found no one type
        values = _values(train, column)
        lists = [i for i, v in enumerate(values) if isinstance(v, list)]
        if lists and len(lists) < len(values):
            single = next(i for i, v in enumerate(values) if not isinstance(v, list))
            raise UsageError(
                f"column `{column}` of train holds label lists in some rows (row {lists[0]}) "
                f"and single labels in others (row {single}: {values[single]!r}); give every row "
                f"a list, e.g. [{values[single]!r}]."
            )
        if lists:
            return MULTI_LABEL
        if any(isinstance(v, float) for v in values):  # numbers and text: a broken regression
            return REGRESSION
    return SINGLE_LABEL


def _label_names(train, config: DataConfig, feature, given) -> list[str]:
    if isinstance(feature, datasets.ClassLabel) and not given:
        return list(feature.names)
    strings = getattr(feature, "dtype", None) in ("string", "large_string")
    if given:
        return list(given)
    if strings or type(feature).__name__ == "Json":
        found = _distinct(train, config.label_column)
        ids = sorted(v for v in found if isinstance(v, int) or str(v).isdigit())
        if ids and len(ids) < len(found):
            names = sorted(str(v) for v in found if v not in ids)
            raise UsageError(
                f"column `{config.label_column}` mixes label ids ({', '.join(map(str, ids[:3]))}) "
                f"and names ({', '.join(names[:3])}); give every row a name, or every row an id "
                f"with --label_names."
            )
        if all(isinstance(v, str) for v in found) and found:
            return sorted(found)
    raise UsageError(
        f"{config.given}: labels are ids but no names are known. Pass --label_names=a,b,c "
        f"(in id order), add a labels.txt beside the split files, or use string labels."
    )


def _distinct(ds: datasets.Dataset, column: str) -> set:
    """The distinct values of a column, or of its lists' items; None left out."""
    if type(ds.features[column]).__name__ == "Json":
        values = _values(ds, column)
        flat = itertools.chain.from_iterable(v if isinstance(v, list) else [v] for v in values)
        return {v for v in flat if v is not None}
    values = ds.data.table.column(column)
    if _is_list(values.type):
        values = pc.list_flatten(values)
    return set(pc.unique(pc.drop_null(values)).to_pylist())


def _is_list(arrow_type) -> bool:
    return (
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


# === Canonical columns ===


def _canonical(ds, split, config: DataConfig, task: Task) -> datasets.Dataset:
    """text(/text_pair)/label columns of the task's types; rows no model can learn from are
    refused. Checked in Arrow, without a Python object per row; Arrow-backed and fingerprinted,
    so that the datasets cache keeps what follows (tokenization) for the next run."""
    text_column, pair_column = config.text_column, config.text_pair_column
    for column in (text_column, pair_column) if pair_column else (text_column,):
        _check_texts(ds.data.table.column(column), split, column)
    labels = _label_array(ds, split, config, task)
    ds = ds.select_columns([c for c in (text_column, pair_column) if c])
    renames = ((text_column, "text"), (pair_column, "text_pair"))
    ds = ds.rename_columns({c: n for c, n in renames if c and c != n})
    return ds.add_column("label", labels, feature=_label_feature(task))


def _label_array(ds, split: str, config: DataConfig, task: Task) -> pa.Array:
    """The labels as the task has them (ids, multi-hot rows or scores), every row checked."""
    if config.label_columns:
        return _multi_hot(*_rows_of_columns(ds, split, config.label_columns), ds.num_rows, task)
    column = ds.data.table.column(config.label_column)
    if type(ds.features[config.label_column]).__name__ == "Json":  # mixed types: row by row
        labels = _label_values(_values(ds, config.label_column), split, task)
        if task.multi_label:
            return _fixed(np.stack(labels), task)
        return pa.array(labels, pa.float32() if task.regression else pa.int64())
    if task.regression:
        return pa.array(_scores(column, split), pa.float32())
    index = {name: i for i, name in enumerate(task.label_names)}
    if not task.multi_label:
        return pa.array(_ids(column, None, split, index), pa.int64())
    if _is_list(column.type):
        nulls = pc.is_null(column)
        if pc.any(nulls).as_py():  # a row without a list
            _label_id(None, pc.index(nulls, True).as_py(), split, index)
        rows = pc.list_parent_indices(column).to_numpy()
        column = pc.list_flatten(column)
    else:  # one label a row, learned as multi-label
        rows = np.arange(len(column))
    return _multi_hot(rows, _ids(column, rows, split, index), len(ds), task)


def _multi_hot(rows: np.ndarray, ids: np.ndarray, n: int, task: Task) -> pa.Array:
    hot = np.zeros((n, task.outputs), np.float32)
    hot[rows, ids] = 1.0
    return _fixed(hot, task)


def _fixed(hot: np.ndarray, task: Task) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(hot.reshape(-1)), task.outputs)


def _ids(values, rows, split: str, index: dict) -> np.ndarray:
    """Label ids of label ids or names (Arrow); the first that is not a label is refused with
    its row (`rows[i]`: the row of value i, where values are lists' items)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if _is_text(values.type):
        ids = pc.index_in(values, value_set=pa.array(list(index), values.type))
    elif pa.types.is_integer(values.type):
        known = pc.and_(pc.greater_equal(values, 0), pc.less(values, len(index)))
        ids = pc.if_else(known, values, pa.scalar(None, values.type))
    else:
        ids = pa.nulls(len(values), pa.int64())
    bad = pc.is_null(ids)
    if pc.any(bad).as_py():
        i = pc.index(bad, True).as_py()
        _label_id(values[i].as_py(), int(rows[i] if rows is not None else i), split, index)
    return ids.to_numpy().astype(np.int64)


def _numbers(column, booleans: bool = False) -> np.ndarray:
    """A column as float64, NaN for nulls; all NaN for a column that is not numbers (nor, unless
    `booleans`, true/false)."""
    kind = column.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if numeric or (booleans and pa.types.is_boolean(kind)):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return np.full(len(column), np.nan)


def _is_text(arrow_type) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _scores(column, split: str) -> np.ndarray:
    scores = _numbers(column)
    bad = ~np.isfinite(scores)
    if bad.any():
        row = int(bad.argmax())
        _score(column[row].as_py(), row, split)
    return scores


def _label_feature(task: Task):
    if task.multi_label:
        return datasets.List(datasets.Value("float32"), length=task.outputs)
    return datasets.Value("float32" if task.regression else "int64")


def _values(ds: datasets.Dataset, column: str) -> list:
    """A column's values as Python objects, read from Arrow (a column of mixed types, datasets'
    `Json` feature, is stored as JSON text)."""
    values = ds.data.table.column(column).to_pylist()
    if type(ds.features[column]).__name__ == "Json":
        return [None if v is None else json.loads(v) for v in values]
    return values


def _check_texts(texts: pa.ChunkedArray, split: str, column: str):
    """Every row's text is a string with something in it (read a chunk at a time)."""
    if not _is_text(texts.type):
        _refuse_text(texts, 0, split, column)  # not text at all
    start = 0
    for chunk in texts.chunks:
        empty = pc.equal(pc.utf8_trim_whitespace(chunk), "")
        bad = pc.or_kleene(pc.is_null(chunk), empty)
        if pc.any(bad).as_py():
            _refuse_text(texts, start + pc.index(bad, True).as_py(), split, column)
        start += len(chunk)


def _refuse_text(texts, row: int, split: str, column: str):
    text = texts[row].as_py()
    what = "null" if text is None else "empty" if isinstance(text, str) else repr(text)
    raise UsageError(
        f"split `{split}` row {row} (0-based): the text in column `{column}` is {what}. "
        f"Fix or drop that row."
    )


def _rows_of_columns(ds, split: str, columns: tuple) -> tuple[np.ndarray, np.ndarray]:
    """0/1 columns -> (row, label id) of each 1."""
    hot = []
    for column in columns:
        values = ds.data.table.column(column)
        found = _numbers(values, booleans=True)
        bad = ~np.isin(found, (0.0, 1.0))
        if bad.any():
            row = int(bad.argmax())
            raise UsageError(
                f"split `{split}` row {row} (0-based): column `{column}` (--label_columns) holds "
                f"{values[row].as_py()!r}; each label column must hold 0 or 1 ({int(bad.sum())} "
                f"rows are affected)."
            )
        hot.append(found == 1.0)
    return np.nonzero(np.stack(hot, axis=1))


def _label_values(raw: list, split: str, task: Task) -> list:
    if task.regression:
        return [_score(v, row, split) for row, v in enumerate(raw)]
    index = {name: i for i, name in enumerate(task.label_names)}
    if not task.multi_label:
        return [_label_id(v, row, split, index) for row, v in enumerate(raw)]
    rows = []
    for row, values in enumerate(raw):
        values = values if isinstance(values, list) else [values]  # single labels, multi-label
        hot = np.zeros(task.outputs, np.float32)
        hot[[_label_id(v, row, split, index) for v in values]] = 1.0
        rows.append(hot)
    return rows


def _label_id(value, row: int, split: str, index: dict) -> int:
    i = index.get(value, -1) if isinstance(value, str) else value
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(index):
        names = ", ".join(index)
        raise UsageError(
            f"split `{split}` row {row} (0-based): label {value!r} is outside the {len(index)} "
            f"labels [0, {len(index)}) ({names}); fix the label or the label names "
            f"(--label_names or labels.txt)."
        )
    return i


def _score(value, row: int, split: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(
            f"split `{split}` row {row} (0-based): the regression label {value!r} is not a "
            f"finite number; fix or drop that row."
        )
    return float(value)


# === Carving, overlap, subsets ===


def _strata(ds: datasets.Dataset, task: Task) -> np.ndarray:
    """A stratum per row: its label (multi-label: its first label, or none), or for regression
    its score's quantile bin."""
    values = labels(ds)
    if task.multi_label:
        return np.where(values.any(axis=1), values.argmax(axis=1), task.outputs)
    if task.regression:
        edges = np.quantile(values, np.linspace(0, 1, SCORE_BINS + 1)[1:-1])
        return np.digitize(values, edges)
    return values


def column(ds: datasets.Dataset, name: str):
    """One column as a single Arrow array. `with_format("arrow")` applies a subset's indices
    mapping; `ds.data` would not."""
    return ds.with_format("arrow")[:].column(name).combine_chunks()


def labels(ds: datasets.Dataset) -> np.ndarray:
    """The split's labels: int64 ids [rows], float32 multi-hot [rows, labels] or float32 scores
    [rows]."""
    return label_array(column(ds, "label"))


def label_array(labels) -> np.ndarray:
    """An Arrow `label` column (array or chunked) as `labels` returns it."""
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    if hasattr(labels.type, "list_size"):
        return labels.flatten().to_numpy().reshape(len(labels), labels.type.list_size)
    return labels.to_numpy()


def fingerprint(ds: datasets.Dataset) -> str:
    """A split's rows as read (texts, labels), in order, hashed: the same for the same rows
    whatever the files' names, times or format; read a chunk at a time."""
    digest = hashlib.sha256()
    for batch in ds.with_format("arrow").iter(batch_size=CHUNK_ROWS):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        digest.update(sink.getvalue())
    return digest.hexdigest()[:16]


def _carve(train, task: Task, fraction: float, seed: int, role: str):
    """(train without, `role`): `fraction` of each stratum's rows, drawn with the seed."""
    strata = _strata(train, task)
    rng = np.random.default_rng(seed + (role == "test"))
    held = []
    for stratum in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == stratum))
        held.extend(rows[: max(1, round(fraction * len(rows)))] if len(rows) > 1 else [])
    held = np.sort(np.asarray(held, dtype=np.int64))
    keep = np.setdiff1d(np.arange(train.num_rows), held)
    print(
        f"The data set has no {role} split: {len(held):,} of {train.num_rows:,} train rows "
        f"({fraction:.0%} of each label, seed {seed}) are set aside as {role} "
        f"(--{role}_fraction)."
    )
    return train.select(keep), train.select(held)


def _count_unlabelled(splits: dict, task: Task):
    if not task.multi_label:
        return
    for name, ds in splits.items():
        none = int((~labels(ds).any(axis=1)).sum())
        if none:
            print(f"{none:,} rows of {name} have no label (an empty list): kept, as negatives.")


def _keys(ds: datasets.Dataset, start: int = 0, stop: int | None = None) -> pa.Array:
    """Rows [start, stop): each one's text (and pair) with whitespace runs made one space, what
    overlap compares."""
    rows = ds.with_format("arrow")[start : ds.num_rows if stop is None else stop]

    def normal(name):  # one string type whatever the file's, so that splits compare
        text = pc.cast(rows.column(name), pa.large_string())
        words = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))
        return pc.binary_join(words, pa.scalar(" ", pa.large_string()))

    if "text_pair" not in rows.column_names:
        return normal("text").combine_chunks()
    tab = pa.scalar("\t", pa.large_string())
    return pc.binary_join_element_wise(normal("text"), normal("text_pair"), tab).combine_chunks()


def _in_train(train: datasets.Dataset, held: pa.Array):
    """Per chunk of train rows: which rows' keys are among `held`'s, and those keys."""
    for start in range(0, train.num_rows, CHUNK_ROWS):
        keys = _keys(train, start, start + CHUNK_ROWS)
        found = pc.is_in(keys, value_set=held)
        yield found.to_numpy(zero_copy_only=False), pc.filter(keys, found)


def overlap(splits) -> dict[str, int]:
    """Distinct texts found in both splits of each pair, where there are any; logged. Train is
    read a chunk at a time: only the held-out splits' texts are kept whole."""
    held = {name: pc.unique(_keys(splits[name])) for name in ("validation", "test")}
    found = {}
    for name, keys in held.items():
        shared = set()
        for _, keys_found in _in_train(splits["train"], keys):
            shared.update(keys_found.to_pylist())
        found[f"train/{name}"] = len(shared)
    found["validation/test"] = len(
        pc.filter(held["validation"], pc.is_in(held["validation"], value_set=held["test"]))
    )
    found = {pair: n for pair, n in found.items() if n}
    if found:
        listed = ", ".join(f"{n:,} in {pair.replace('/', ' and ')}" for pair, n in found.items())
        print(
            f"Warning: texts found in more than one split: {listed} (--drop_overlap removes them "
            f"from train)."
        )
    return found


def _drop_overlap(splits: dict) -> datasets.Dataset:
    held = pa.concat_arrays([_keys(splits["validation"]), _keys(splits["test"])])
    train = splits["train"]
    shared = np.concatenate([found for found, _ in _in_train(train, held)])
    print(
        f"--drop_overlap: {int(shared.sum()):,} train rows whose text is also in validation or "
        f"test are removed."
    )
    return train.select(np.flatnonzero(~shared))


def _subset(ds: datasets.Dataset, n: int) -> datasets.Dataset:
    if not n or n >= ds.num_rows:
        return ds
    return ds.shuffle(seed=SUBSET_SEED).select(range(n))
