"""The Python API: the command lines' work as functions, their arguments named as the flags.

>>> import bert_keras
>>> results = bert_keras.fit(dataset="emotion", output_dir="runs/x", epochs=1)
>>> results.test["accuracy"] > 0.8, results.export
(True, 'runs/x/export/emotion/1')
>>> classify = bert_keras.load("runs/x")
>>> classify(["i feel great"])[0]["label"]
'joy'

Nothing here reads or defines absl flags, and importing it loads no library: each function
imports what it needs when called. Bad input raises `bert_keras.errors.UsageError` (one line
saying what is wrong and what to do), before any file is written; a run that cannot go on
raises `TrainingError`, and SIGTERM or SIGINT during training `Interrupted` (the run is backed
up: calling the same function again resumes it).
"""

from pathlib import Path


def fit(callbacks=(), **flags):
    """Trains, tests and exports a run as `bert-keras train` does; returns its `Results`
    (metrics.json: `.test`, `.best()`, `.export`, ...). `flags`: the trainer's flags by name,
    as Python values (`label_names=["neg", "pos"]`); the others keep their defaults. A finished
    run of the same flags in `output_dir` is read back, not trained again (`overwrite=True`
    trains it again). `callbacks`: Keras callbacks after the run's own."""
    from bert_keras import logs

    logs.speed_defaults()  # only if TensorFlow is not loaded yet
    from bert_keras import train
    from bert_keras.config import RunConfig

    return train.run(RunConfig.create(**flags), callbacks)


def load(path):
    """A classifier of texts: `load(path)(["a text", ...])` answers a dict per text, as
    `bert-keras predict` prints them; `.outputs(texts)` the export's outputs as arrays. `path`:
    a run directory, an export's model folder (its newest SavedModel version), a version folder
    of any format (`.../emotion/1`, `.../emotion/onnx/1` in float32, `.../emotion/hf/1`) or an
    ONNX file in one (`.../onnx/1/model.int8.onnx`). A SavedModel runs on TensorFlow and TF Text
    only; ONNX on ONNX Runtime and its extensions (`[onnx]`); a Hugging Face folder on
    transformers and PyTorch (which bert_keras does not install)."""
    from bert_keras import predict

    return predict.Predictor(Path(path))


def evaluate(run_dir=None, export_dir=None, split="test", dataset=None, report_dir=None) -> Path:
    """Reports (REPORT.md and its pictures) of a run's best checkpoint or an export on a split,
    as `bert-keras evaluate` writes them; returns their folder."""
    from bert_keras import logs

    logs.speed_defaults()
    from bert_keras import evaluation

    return evaluation.evaluate(run_dir, export_dir, split, dataset, report_dir)


def export(run_dir, export_base=None, model_name=None, format="savedmodel"):
    """Exports a run's best checkpoint as `bert-keras export` does: `format` one of
    "savedmodel" and "hf", or a list of them; returns the version's folder (a dict by format
    for a list)."""
    from bert_keras import exporting

    base = Path(export_base) if export_base else None
    formats = [format] if isinstance(format, str) else list(format)
    written = exporting.from_run(Path(run_dir), base, model_name, formats=formats)
    return written[format] if isinstance(format, str) else written


def search(**flags):
    """A hyperparameter search as `bert-keras search` runs it (`trials=` and/or
    `budget_minutes=`, `search=[...]`, `search_<flag>=...`, and the trainer's flags as the
    base); returns the best trial's `Results`, finished as a run is."""
    from bert_keras import logs

    logs.speed_defaults()
    from bert_keras import searching

    return searching.search(searching.SearchConfig.create(**flags))
