"""Stage 2: a checkpoint's tensors, as numpy arrays, from the files a Hugging Face folder holds:
`model.safetensors` (or shards), or PyTorch's `pytorch_model.bin` (or shards), read without
PyTorch and without running anything the file asks for.

`torch.save` writes a zip: `<name>/data.pkl`, a pickle of the state dict whose tensors point at
raw storages `<name>/data/<key>`. A pickle may call any function it names, so the one here is read
by an unpickler that admits only what a state dict needs: `OrderedDict`, the tensor and parameter
rebuild functions and the storage types (a subset of what torch's own `weights_only=True`
admits). Anything else is refused in one line before it is called.

>>> arrays = read(Path("/path/to/hf_folder"))
>>> arrays["bert.embeddings.word_embeddings.weight"].shape
(30522, 384)
"""

import contextlib
import json
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from bert_keras.errors import UsageError

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PYTORCH = ("pytorch_model.bin", "pytorch_model.bin.index.json")
WEIGHT_FILES = SAFETENSORS + PYTORCH


# torch's legacy storage class names (what `torch.save` still writes) -> their element type.
STORAGES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # Keras' and TensorFlow's dependency: numpy has no bfloat16

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def read(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's weights by its name; safetensors first where both exist.
    Floating-point tensors come as float32."""
    if any((folder / name).is_file() for name in SAFETENSORS):
        files = _files(folder, *SAFETENSORS)
        arrays = {k: v for f in files for k, v in _read_safetensors(f).items()}
    else:
        files = _files(folder, *PYTORCH)
        arrays = {k: v for f in files for k, v in read_torch_zip(f).items()}
    return {k: v.astype(np.float32) if _floating(v) else v for k, v in arrays.items()}


def _floating(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating) or array.dtype == _dtype("bfloat16")


def _files(folder: Path, single: str, index: str) -> list[Path]:
    if (folder / single).is_file():
        return [folder / single]
    weight_map = json.loads((folder / index).read_text())["weight_map"]
    files = [folder / name for name in sorted(set(weight_map.values()))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UsageError(f"{folder / index} names {', '.join(missing)}, not in the folder.")
    return files


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import numpy as as_numpy

    try:
        return as_numpy.load_file(str(path))
    except TypeError:  # numpy has no bfloat16: through TensorFlow, as ml_dtypes' bfloat16
        from safetensors import tensorflow as as_tensorflow

        return {k: v.numpy() for k, v in as_tensorflow.load_file(str(path)).items()}


@contextlib.contextmanager
def as_safetensors(folder: Path):
    """The folder itself where it holds safetensors; else a temporary copy (its files linked)
    whose `model.safetensors` holds the `.bin` weights: what keras-hub's converters read."""
    if any((folder / name).is_file() for name in SAFETENSORS):
        yield folder
        return
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory(prefix="bert_keras_weights_") as tmp:
        for path in folder.iterdir():
            if path.name not in PYTORCH and not path.name.endswith(".bin"):
                (Path(tmp) / path.name).symlink_to(path.resolve())
        save_file(read(folder), str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        yield Path(tmp)


# === torch.save's zip, without torch ===


class _Storage:
    def __init__(self, dtype, key: str):
        self.dtype, self.key = dtype, key


def check(folder: Path):
    """A UsageError now, before any work, for a `.bin` the reader would refuse (its pickles are
    read, not its tensors)."""
    if not any((folder / name).is_file() for name in SAFETENSORS):
        for path in _files(folder, *PYTORCH):
            with _archive(path) as (archive, _):
                _state(archive, path)


def read_torch_zip(path: Path) -> dict[str, np.ndarray]:
    """The state dict in a `torch.save` file: a UsageError for anything but a zip whose pickle
    asks for nothing beyond tensors."""
    with _archive(path) as (archive, root):
        return {
            name: _materialise(archive, root, value, path)
            for name, value in _state(archive, path).items()
            if isinstance(value, _Tensor)
        }


@contextlib.contextmanager
def _archive(path: Path):
    if not zipfile.is_zipfile(path):
        raise UsageError(
            f"{path} is not a zip written by torch.save (PyTorch 1.6 or newer): bert_keras "
            f"reads no older pickle. Convert it to model.safetensors with transformers' "
            f"save_pretrained(..., safe_serialization=True)."
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise UsageError(f"{path}: no data.pkl in the zip; it is no torch.save file.")
        yield archive, pickles[0][: -len("data.pkl")]


def _state(archive: zipfile.ZipFile, path: Path) -> dict:
    name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
    try:
        with archive.open(name) as f:
            state = _SafeUnpickler(f, path).load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, KeyError) as e:
        raise UsageError(f"{path}: cannot be read as a state dict ({e}).") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not a state dict.")
    return state


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _materialise(archive, root: str, tensor: _Tensor, path: Path) -> np.ndarray:
    dtype = tensor.storage.dtype
    data = np.frombuffer(archive.read(f"{root}data/{tensor.storage.key}"), dtype.newbyteorder("<"))
    if not tensor.size:
        return data[tensor.offset : tensor.offset + 1].reshape(()).copy()
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True))
    if last >= data.size or tensor.offset < 0 or min(tensor.stride) < 0:
        raise UsageError(f"{path}: a tensor reaches beyond its storage; the file is damaged.")
    strides = [s * dtype.itemsize for s in tensor.stride]
    view = np.lib.stride_tricks.as_strided(data[tensor.offset :], tensor.size, strides)
    return np.array(view, dtype=dtype.newbyteorder("="))


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    """torch._utils._rebuild_parameter(data, requires_grad, hooks): the tensor itself."""
    return data


class _SafeUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGES:
            return name
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise UsageError(
            f"{self.path} asks to run {module}.{name} when read: a checkpoint holds tensors "
            f"only, so it was refused and nothing in it ran. Use a safetensors checkpoint, or "
            f"a pytorch_model.bin from a source you trust converted to safetensors."
        )

    def persistent_load(self, pid):
        """('storage', storage type, key, location, size): a storage record of the zip."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        kind = pid[1]
        dtype = STORAGES.get(kind) if isinstance(kind, str) else None
        if dtype is None:
            raise pickle.UnpicklingError(f"unknown storage type {kind!r}")
        return _Storage(_dtype(dtype), str(pid[2]))
