"""What runs an export, by its format: a SavedModel on TensorFlow and TF Text, ONNX on ONNX
Runtime and its extensions (the `[onnx]` extra), a Hugging Face folder on transformers and
PyTorch (installed by the user: not a dependency of bert_keras).

Each engine answers `outputs(texts, pairs)` with the SavedModel's outputs (`serving.module.OUTPUTS`
for the problem type) as numpy arrays, and has the export's `ExportInfo` as `info`.

>>> engine = open_export(find("runs/emotion/export/emotion/onnx/1/model.int8.onnx"))
>>> engine.outputs(["i feel great"], None)["label"]
array(['joy'], dtype=object)
"""

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

from bert_keras import to_onnx
from bert_keras.errors import UsageError, cause
from bert_keras.serving.info import INFO, ExportInfo

ONNX_FLOAT32 = to_onnx.FILES["float32"]  # what an ONNX version folder runs
FORMAT_FOLDERS = ("onnx", "hf")  # beside a model folder's SavedModel versions


@dataclasses.dataclass(frozen=True)
class Found:
    path: Path  # a version folder, or the ONNX file chosen in one
    format: str  # "savedmodel", "onnx" or "hf"

    @property
    def folder(self) -> Path:
        return self.path.parent if self.path.is_file() else self.path


def find(path) -> Found:
    """What a user passes -> the export to run. A version folder of any format (an ONNX one runs
    float32) or one of its `.onnx` files as given; a model folder (`<base>/<name>`): its newest
    SavedModel version, else the newest of `onnx/` or `hf/`; `<name>/onnx` or `<name>/hf`: their
    newest version; a run directory with one exported model: that model folder's."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        return _checked(Found(path, "onnx"))
    if not path.is_dir():
        raise UsageError(
            f"--export_dir={path}: no such directory; give an export such as "
            f"runs/emotion/export/emotion (newest version) or runs/emotion/export/emotion/1."
        )
    if found := _version(path):
        return _checked(found)
    from bert_keras.rundir import RunDir

    exports = RunDir(path).export_base
    if exports.is_dir():  # a run directory
        models = [p for p in exports.iterdir() if p.is_dir()]
        if len(models) == 1:
            path = models[0]
    for folder in (path, *(path / name for name in FORMAT_FOLDERS)):
        versions = [p for p in folder.glob("[0-9]*") if p.name.isdigit() and _version(p)]
        if versions:
            return _checked(_version(max(versions, key=lambda p: int(p.name))))
    raise UsageError(
        f"--export_dir={path} holds no export (no saved_model.pb, ONNX model or Hugging Face "
        f"folder, no numbered version folders); give a folder that `bert-keras export` wrote."
    )


def _version(folder: Path) -> Found | None:
    if (folder / "saved_model.pb").is_file():
        return Found(folder, "savedmodel")
    if (folder / ONNX_FLOAT32).is_file():
        return Found(folder / ONNX_FLOAT32, "onnx")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return Found(folder, "hf")
    return None


def _checked(found: Found) -> Found:
    info = found.folder / (INFO if found.format == "savedmodel" else Path(INFO).name)
    if not info.is_file():
        raise UsageError(
            f"--export_dir={found.path} is not a bert_keras export (no {info.name}); export a "
            f"run with `bert-keras export --run_dir=RUN`."
        )
    return found


def open_export(found: Found):
    """The engine of `found`'s format."""
    engine = {"savedmodel": SavedModel, "onnx": Onnx, "hf": HuggingFace}[found.format]
    return engine(found.path)


class SavedModel:
    """`serving_default`, as TF Serving runs it: only TensorFlow and TF Text."""

    def __init__(self, folder: Path):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the in-graph tokenizer's ops)

        serving_threads()
        self.info = ExportInfo.read(folder)
        try:
            loaded = tf.saved_model.load(str(folder))
        except Exception as e:  # truncated files, missing variables: the export is broken
            raise UsageError(
                f"cannot load the SavedModel in {folder} ({cause(e)}); export the run again."
            ) from None
        self._serve, self._tf = loaded.signatures["serving_default"], tf

    def outputs(self, texts, pairs) -> dict:
        tf = self._tf
        inputs = {"text": tf.constant(texts, tf.string)}
        if pairs is not None:
            inputs["text_pair"] = tf.constant(pairs, tf.string)
        return {k: v.numpy() for k, v in self._serve(**inputs).items()}


def thread_counts() -> tuple[int, int]:
    """(intra-op, inter-op) threads to serve with: one thread per op, as many ops at once as
    there are cores. The export's ops are small (a request is cut into chunks of a few rows, and
    a short text's matrices are small), so splitting each op over threads costs more than it
    saves, while the chunks and an encoder layer's halves run side by side (docs/performance.md).
    TF Serving's flags for the same: docs/serving.md."""
    return 1, os.cpu_count() or 1


def serving_threads():
    """`thread_counts()` for this process's TensorFlow. Only before TensorFlow has run anything
    in this process; later, its settings stay."""
    import tensorflow as tf

    intra, inter = thread_counts()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # already initialised (an application that ran TensorFlow first)
        pass


class Onnx:
    """An ONNX model of `bert-keras export --format=onnx`: raw text in where its graph holds the
    tokenizer, else the Hugging Face tokenizer beside it (tokenizer.json) makes the token ids."""

    def __init__(self, model_file: Path):
        extensions = onnx_extensions()  # first: a UsageError where the `[onnx]` extra is missing
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.register_custom_ops_library(extensions)
        self.info = ExportInfo.from_json(
            json.loads((model_file.parent / "bert_keras.json").read_text())
        )
        try:
            self._session = onnxruntime.InferenceSession(str(model_file), options)
        except Exception as e:  # a truncated or foreign file
            raise UsageError(
                f"cannot load the ONNX model {model_file} ({cause(e)}); export the run again."
            ) from None
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer = None
        if "text" not in self._inputs:
            import transformers

            self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_file.parent))

    def outputs(self, texts, pairs) -> dict:
        texts = [as_str(t) for t in texts]
        pairs = pairs and [as_str(t) for t in pairs]
        if self._tokenizer is None:
            feed = {"text": np.array(texts, object)}
            if pairs is not None:
                feed["text_pair"] = np.array(pairs, object)
        else:
            feed = token_ids(self._tokenizer, texts, pairs, self.info.max_seq_length)
            feed = {k: v for k, v in feed.items() if k in self._inputs}
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, feed), strict=True))


def onnx_extensions() -> str:
    """onnxruntime-extensions' library, loaded so that its regular expressions bind to its own
    RE2 even where TensorFlow (whose symbols are global) came first: without RTLD_DEEPBIND its
    regex operators then answer wrongly (docs/serving.md)."""
    try:
        if "onnxruntime_extensions" not in sys.modules:
            previous = sys.getdlopenflags()
            sys.setdlopenflags(os.RTLD_NOW | os.RTLD_DEEPBIND)
            try:
                import onnxruntime_extensions
            finally:
                sys.setdlopenflags(previous)
        import onnxruntime_extensions
    except ImportError as e:
        raise UsageError(
            f"an ONNX export runs with {e.name}: pip install 'bert-keras[onnx]'."
        ) from None
    return onnxruntime_extensions.get_library_path()


def token_ids(tokenizer, texts, pairs, max_seq_length: int) -> dict:
    """The backbone's inputs by the names the models take (int32), as training tokenizes."""
    encoded = tokenizer(
        texts, pairs, truncation=True, max_length=max_seq_length, padding=True, return_tensors="np"
    )
    ids = encoded["input_ids"]
    return {
        "token_ids": ids.astype(np.int32),
        "segment_ids": encoded.get("token_type_ids", np.zeros_like(ids)).astype(np.int32),
        "padding_mask": encoded["attention_mask"].astype(np.int32),
    }


class HuggingFace:
    """The Hugging Face folder of `--format=hf` in transformers' pipeline (on PyTorch, which the
    user installs: never imported here), its raw logits turned into the SavedModel's outputs as
    the SavedModel computes them (a multi-label run's thresholds, not the pipeline's 0.5)."""

    def __init__(self, folder: Path):
        if importlib.util.find_spec("torch") is None:
            raise UsageError(
                "a Hugging Face folder runs with torch, which bert_keras does not install: "
                "pip install torch (or run its SavedModel or ONNX export)."
            )
        import transformers

        self.info = ExportInfo.from_json(json.loads((folder / "bert_keras.json").read_text()))
        self._classify = transformers.pipeline(
            "text-classification", model=str(folder), top_k=None, function_to_apply="none"
        )
        self._labels = self._classify.model.config.id2label

    def outputs(self, texts, pairs) -> dict:
        texts = [as_str(t) for t in texts]
        inputs = (
            texts
            if pairs is None
            else [{"text": t, "text_pair": as_str(p)} for t, p in zip(texts, pairs, strict=True)]
        )
        answers = self._classify(inputs, truncation=True, batch_size=32)
        order = [self._labels[i] for i in range(len(self._labels))]
        logits = [[{a["label"]: a["score"] for a in row}[n] for n in order] for row in answers]
        return from_logits(np.array(logits, np.float32).reshape(len(texts), -1), self.info)


def from_logits(logits: np.ndarray, info: ExportInfo) -> dict:
    """The SavedModel's outputs for the problem type (`serving.module`), in numpy."""
    names = np.array(info.label_names, dtype=object)
    if info.problem_type == "regression":
        return {"score": logits[:, 0]}
    if info.problem_type == "single_label":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        best = logits.argmax(axis=1)
        return {
            "probabilities": shifted / shifted.sum(axis=1, keepdims=True),
            "label_id": best.astype(np.int32),
            "label": names[best],
        }
    probabilities = 1 / (1 + np.exp(-logits))
    hot = probabilities >= np.array(info.thresholds or [0.5] * len(names), np.float32)
    rows = [list(names[row]) for row in hot]
    width = max(map(len, rows), default=0)
    labels = np.array([row + [""] * (width - len(row)) for row in rows], object).reshape(-1, width)
    return {"probabilities": probabilities, "predicted": hot.astype(np.int32), "labels": labels}


def as_str(text) -> str:
    """A text as str (invalid UTF-8 replaced)."""
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text
