"""A trained backbone's weights back into its Hugging Face checkpoint's tensors, for every family.

Each family loads a Hugging Face folder by its own conversion (keras-hub's converters, or
`convert.py`): transposes, reshapes and slices, so every backbone weight is one element of one
checkpoint tensor. Rather than restate each conversion backwards, the family's own loader is run
on a copy of the checkpoint whose values are element numbers: what lands in each Keras weight says
where it came from. float32 holds integers exactly up to 2**24, so two copies carry the number (the
tensor's index and the element's low 12 bits; the element's high bits). A Hugging Face element no
weight came from keeps the checkpoint's value (RoBERTa's two padding positions).
"""

import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
from safetensors.numpy import save_file

from bert_keras import tensors

_LOW = 4096  # 2**12: tensor index * 4096 + low bits stays below 2**24 for 4,096 tensors


def checkpoint_tensors(family, folder: Path, trained: keras.Model) -> dict[str, np.ndarray]:
    """The checkpoint's tensors with the trained backbone's values where its weights came from.
    Tensors no weight came from are left out, but those a family folds into another weight
    (`family.folded`: RoBERTa's token-type row, added to every position)."""
    original = tensors.read(folder)
    names = [k for k, v in original.items() if np.issubdtype(v.dtype, np.floating)]
    if len(names) >= _LOW:
        raise ValueError(f"{folder}: {len(names)} tensors; the probe numbers fewer than {_LOW}")
    folded = [k for k in names if family.folded and k.endswith(family.folded)]
    low = _probe(family, folder, original, names, folded, lambda j, e: j * _LOW + e % _LOW)
    high = _probe(family, folder, original, names, folded, lambda j, e: e // _LOW)
    out = {k: original[k].copy() for k in names}
    covered = {k: np.zeros(original[k].shape, bool) for k in names}
    skip = _not_from_checkpoint(trained)
    for value, lo, hi in zip(trained.weights, low, high, strict=True):
        if value.path in skip:
            continue
        if not (np.array_equal(lo, np.round(lo)) and np.array_equal(hi, np.round(hi))):
            raise ValueError(f"{family.name}: {value.path} is not a copy of checkpoint elements")
        lo, hi = lo.ravel().astype(np.int64), hi.ravel().astype(np.int64)
        value = keras.ops.convert_to_numpy(value.value).astype(np.float32).ravel()
        for j in np.unique(lo // _LOW):
            at = lo // _LOW == j
            name = names[j]
            out[name].reshape(-1)[hi[at] * _LOW + lo[at] % _LOW] = value[at]
            covered[name].reshape(-1)[hi[at] * _LOW + lo[at] % _LOW] = True
    for name in folded:  # its row 0 was added to the positions the probe saw as they are
        for k in names:
            if k.endswith("position_embeddings.weight"):
                out[k][covered[k].all(axis=1)] -= original[name][0]
    return {k: v for k, v in out.items() if covered[k].any() or k in folded}


def _probe(family, folder: Path, original: dict, names: list, folded: list, number) -> list:
    """The family's backbone loaded from a copy of `folder` holding `number(tensor, element)`
    in every element (zeros in folded tensors); its weights as numpy, in the backbone's order."""
    probe = {}
    for j, name in enumerate(names):
        size = original[name].size
        values = np.zeros(size) if name in folded else number(j, np.arange(size))
        probe[name] = values.astype(np.float32).reshape(original[name].shape)
    with tempfile.TemporaryDirectory(prefix="bert_keras-probe-") as tmp:
        shutil.copy(folder / "config.json", tmp)
        save_file(probe, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        backbone = family.load_backbone(tmp, 0.0)
    return [keras.ops.convert_to_numpy(w.value) for w in backbone.weights]


def _not_from_checkpoint(backbone) -> set[str]:
    """The pooler's weights: read by the head's export itself (a `*ForSequenceClassification`
    checkpoint's, else at random: then the probe numbers nothing)."""
    dense = getattr(backbone, "pooled_dense", None)
    return {w.path for w in dense.weights} if dense is not None else set()
