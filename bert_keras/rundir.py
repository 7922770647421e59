"""The run directory: what one run leaves behind, and when it counts as finished.

A run is finished when `metrics.json` exists: it is written last, atomically, after the test
evaluation and the export. Everything else a run writes goes in before it. A run without it is
unfinished: rerunning its command resumes it from `backup/` (or starts over when no backup was
made yet); every file is replaced by a rename, so a kill leaves the old version or the new one.

    <output_dir>/
      run.flags        flagfile that reproduces the run (python -m bert_keras.train --flagfile=...)
      labels.txt       label names, one a line, in id order
      checkpoints/     best.weights.h5 (best validation micro-F1)
      backup/          step-<N>/: the state to resume from (until metrics.json is written)
      logs/            training.csv, steps.csv (loss per step), TensorBoard events
      reports/test/    REPORT.md, classification report, confusion matrix and F1 PNGs
      export/<name>/1/ the SavedModel, with its MODEL_CARD.md
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


# Flags that may change between a run and its resumption: they do not change what is learned.
RESUMABLE_CHANGES = {"backup_every_steps"}

NEW, RESUME, DONE = "new", "resume", "finished"


def check(output_dir: Path, overwrite: bool, flags_text: str, has_backup: bool) -> str:
    """What a run with these flags does with --output_dir, decided before any work: NEW (start
    there), RESUME (its unfinished run of the same flags, from the backup) or DONE (its finished
    run of the same flags: nothing to do). Refuses a directory this run must not write into."""
    if output_dir.is_file():
        raise UsageError(f"--output_dir={output_dir} is a file; give a directory.")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return NEW
    finished = (output_dir / FINISHED).is_file()
    if not (output_dir / MARKER).is_file():
        raise UsageError(
            f"--output_dir={output_dir} is not empty and is not a bert_keras run directory; "
            f"choose an empty or new directory."
        )
    if overwrite:
        return NEW
    changed = _changed_flags(read_flags(output_dir), flags_text)
    if changed and finished:
        raise UsageError(
            f"--output_dir={output_dir} holds a finished run with other flags ({changed}); pass "
            f"--overwrite to replace it, or choose another --output_dir."
        )
    if changed:
        raise UsageError(
            f"--output_dir={output_dir} holds an unfinished run with other flags ({changed}); "
            f"resume it with --flagfile={output_dir / MARKER}, pass --overwrite to start over, "
            f"or choose another --output_dir."
        )
    if finished:
        return DONE
    return RESUME if has_backup else NEW


def _changed_flags(before: dict[str, str], flags_text: str) -> str:
    now = parse_flags(flags_text)
    changed = [
        f"--{name}={now.get(name, '')} (was {before.get(name, '')})"
        for name in sorted(set(before) | set(now))
        if name not in RESUMABLE_CHANGES and before.get(name) != now.get(name)
    ]
    return ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")


def create(output_dir: Path, state: str = NEW) -> Path:
    """Starts a fresh run directory in place of an unfinished (or, with --overwrite, any) run;
    for RESUME, keeps the run and removes only the temporary files of interrupted writes.

    Earlier exports stay: the new one becomes the next version beside them.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    if state == RESUME:
        for tmp in [*output_dir.glob(".*"), *output_dir.glob("*/.*")]:
            if tmp.parent.name != "export":
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        return output_dir
    for path in output_dir.iterdir():
        if path.name == "export":
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return output_dir


def replace_atomically(path: Path, write):
    """`write(tmp)` fills a hidden temporary file beside `path` (same suffixes, which Keras'
    `save_weights` insists on), then it is renamed over `path`: readers see the old file or the
    whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix="".join(path.suffixes)
    )
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str):
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


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
    return parse_flags((run_dir / MARKER).read_text())


def parse_flags(flags_text: str) -> dict[str, str]:
    """A flagfile's flags by name; booleans (`--name`, `--noname`) as "true" / "false"."""
    parsed = {}
    for line in flags_text.splitlines():
        name, equals, value = line.strip().removeprefix("--").partition("=")
        if not name or name.startswith("#"):
            continue
        if not equals:
            negated = name.startswith("no") and not name.startswith("no_")
            name, value = (name[2:], "false") if negated else (name, "true")
        parsed[name] = value
    return parsed


def read_labels(run_dir: Path) -> list[str]:
    return (run_dir / LABELS).read_text().splitlines()


def versions() -> dict:
    """Python's and the libraries' versions, as recorded in metrics.json and exports."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found
