"""PyTorch's `pytorch_model.bin`, read without PyTorch: the values torch.save wrote (files made by
tests/make_fixtures.py with PyTorch), a `.bin`-only folder loading the same backbone as its
safetensors, and pickles that ask to run code refused before anything they ask for runs.
(A `.bin`-only DeBERTa-v3 folder, the hub's layout, trains and exports in test_families.py.)"""

import pickle
import shutil
import zipfile

import numpy as np
import pytest
import tiny_models

from bert_keras import checkpoint, model, tensors
from bert_keras.errors import UsageError

BINS = tiny_models.FIXTURES / "pytorch_model"


def test_every_storage_type_view_and_parameter_reads_as_torch_wrote_it():
    import ml_dtypes

    got = tensors.read_torch_zip(BINS / "cases.bin")
    t = np.arange(24, dtype=np.float32).reshape(4, 6)
    want = {
        "whole": t,
        "columns": t[:, 1:3],
        "transposed": t.T,
        "offset": t[2],
        "bfloat16": np.array([1.5, -2.25, 3.0], ml_dtypes.bfloat16),
        "float16": np.array([0.5, 65504.0], np.float16),
        "float64": np.array([1e-300]),
        "int64": np.array(-5, np.int64),
        "int8": np.array([-128, 127], np.int8),
        "boolean": np.array([True, False]),
        "parameter": np.full((2, 2), 0.25, np.float32),
    }
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert tensors.read_torch_zip(BINS / "cases.bin")["columns"].flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("family", ["albert", "deberta-v2"])
def test_a_bin_only_folder_loads_the_backbone_its_safetensors_load(family, tmp_path):
    """albert through keras-hub's converter (the weights handed to it as safetensors), DeBERTa-v3
    through bert_keras' own: the same weights as from the folder's safetensors."""
    safetensors = tiny_models.write(family, tmp_path / "safetensors", hub_layout=False)
    bin_only = tiny_models.write(family, tmp_path / "bin", hub_layout=False)
    (bin_only / "model.safetensors").unlink()
    shutil.copy(BINS / f"{family}.bin", bin_only / "pytorch_model.bin")
    a, b = (
        model.load_backbone(checkpoint.resolve(str(f), 64), 0.0) for f in (safetensors, bin_only)
    )
    assert len(a.weights) == len(b.weights) > 10
    for x, y in zip(a.weights, b.weights, strict=True):
        if not x.path.startswith("pooled_dense/"):  # not in a MaskedLM layout: starts at random
            np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)
    beside = {p.name for p in safetensors.iterdir()} - {"model.safetensors"}
    assert {p.name for p in bin_only.iterdir()} == beside | {"pytorch_model.bin"}  # none written


def _load(folder):
    return model.load_backbone(checkpoint.resolve(str(folder), 64), 0.0)


def test_bfloat16_safetensors_read_as_float32(tmp_path):
    import tensorflow as tf
    from safetensors.tensorflow import save_file

    values = [1.5, -2.25, 3.0]
    save_file(
        {"a": tf.constant(values, tf.bfloat16), "b": tf.range(4)},
        str(tmp_path / "model.safetensors"),
    )
    arrays = tensors.read(tmp_path)
    assert arrays["a"].dtype == np.float32 and arrays["a"].tolist() == values
    assert arrays["b"].tolist() == [0, 1, 2, 3]


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _bin(path, state, zipped=True):
    """A file laid out as torch.save lays it out (a zip holding `<name>/data.pkl`), or a bare
    pickle as PyTorch before 1.6 wrote."""
    data = pickle.dumps(state, protocol=2)
    if not zipped:
        path.write_bytes(data)
        return path
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("zipped", [True, False])
def test_a_pickle_that_would_run_a_command_is_refused_and_nothing_runs(zipped, tmp_path):
    folder = tiny_models.write("albert", tmp_path / "model", hub_layout=False)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "the_payload_ran"
    _bin(folder / "pytorch_model.bin", {"weight": _RunsACommand(marker)}, zipped)
    expected = "asks to run posix.system when read" if zipped else "is not a zip written by"
    for attempt in (
        lambda: checkpoint.resolve(str(folder), 64),  # checked before any work
        lambda: tensors.read(folder),
    ):
        with pytest.raises(UsageError, match=expected) as refused:
            attempt()
        assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_a_damaged_or_foreign_bin_is_one_line(tmp_path):
    empty = tmp_path / "empty.bin"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("archive/version", "3\n")
    with pytest.raises(UsageError, match="no data.pkl in the zip"):
        tensors.read_torch_zip(empty)
    with pytest.raises(UsageError, match="holds a list, not a state dict"):
        tensors.read_torch_zip(_bin(tmp_path / "list.bin", [1, 2]))
    truncated = tmp_path / "truncated.bin"
    with zipfile.ZipFile(truncated, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(UsageError, match="cannot be read as a state dict"):
        tensors.read_torch_zip(truncated)
