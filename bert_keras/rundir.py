"""The run directory: what one run leaves behind, and when it counts as finished.

A run is finished when `metrics.json` exists: it is written last, atomically, after the test
evaluation and the export. Everything else a run writes goes in before it.

    <output_dir>/
      run.flags        flagfile that reproduces the run (python -m bert_keras.train --flagfile=...)
      labels.txt       label names, one a line, in id order
      checkpoints/     best.weights.h5 (best validation micro-F1)
      logs/            training.csv, TensorBoard events
      export/<name>/1/ the SavedModel
      metrics.json     per-epoch validation metrics, test metrics, speed, versions
"""

import contextlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from bert_keras.errors import UsageError

FINISHED = "metrics.json"
MARKER = "run.flags"  # present in every bert_keras run directory, finished or not
LABELS = "labels.txt"
BEST_WEIGHTS = "checkpoints/best.weights.h5"

LIBRARIES = (
    "tensorflow",
    "keras",
    "keras-hub",
    "tensorflow-text",
    "transformers",
    "tokenizers",
    "datasets",
    "scikit-learn",
    "numpy",
    "absl-py",
)


def check(output_dir: Path, overwrite: bool):
    """Refuses, before any work, a directory this run must not write into."""
    if output_dir.is_file():
        raise UsageError(f"--output_dir={output_dir} is a file; give a directory.")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if (output_dir / FINISHED).is_file() and not overwrite:
        raise UsageError(
            f"--output_dir={output_dir} holds a finished run; pass --overwrite to replace it, or "
            f"choose another --output_dir."
        )
    if not (output_dir / MARKER).is_file():
        raise UsageError(
            f"--output_dir={output_dir} is not empty and is not a bert_keras run directory; "
            f"choose an empty or new directory."
        )


def create(output_dir: Path) -> Path:
    """Starts a fresh run directory in place of an unfinished (or, with --overwrite, any) run.

    Earlier exports stay: the new one becomes the next version beside them.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in output_dir.iterdir():
        if path.name == "export":
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return output_dir


def write_text(path: Path, text: str):
    """Atomic: readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these are meant to be shared
    os.replace(tmp, path)


def write_json(path: Path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_flags(run_dir: Path) -> dict[str, str]:
    """The flags a run was started with (its `run.flags`), by name."""
    if not run_dir.is_dir():
        raise UsageError(f"--run_dir={run_dir}: no such directory; give a run's --output_dir.")
    if not (run_dir / MARKER).is_file():
        raise UsageError(
            f"--run_dir={run_dir} is not a bert_keras run directory (no {MARKER}); give the "
            f"--output_dir of a training run."
        )
    lines = (run_dir / MARKER).read_text().splitlines()
    return dict(line.removeprefix("--").split("=", 1) for line in lines if "=" in line)


def read_labels(run_dir: Path) -> list[str]:
    return (run_dir / LABELS).read_text().splitlines()


def versions() -> dict:
    """Python's and the libraries' versions, as recorded in metrics.json and exports."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found
