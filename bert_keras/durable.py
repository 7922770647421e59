"""The one way bert_keras writes a file or a folder that someone may read meanwhile.

Everything is written under a hidden temporary name beside its destination, synced to disk,
then renamed into place, and the directory that holds it synced: a reader (a resumed run, TF
Serving watching an export folder, a person opening a report) sees the old version or the whole
new one, never a part; a kill leaves at most a hidden temporary file that the next run removes,
and a power loss after a write returned cannot take it back.

>>> write_text(run / "labels.txt", "joy\\nsadness\\n")
>>> write_folder(run / "reports", lambda tmp: (tmp / "REPORT.md").write_text("..."),
...              replacing(run / "reports" / "test"))
"""

import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

HIDDEN = "."  # temporary names start with it: servers and globs of real names skip them


def write_file(path: Path, write: Callable[[str], object]):
    """`write(tmp)` fills a temporary file beside `path` (with the same suffixes, which Keras'
    `save_weights` insists on); then it replaces `path`."""
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{HIDDEN}{path.name}.", suffix="".join(path.suffixes)
    )
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are meant to be shared
        _sync(Path(tmp))
        os.replace(tmp, path)
        _sync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str):
    write_file(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_folder(parent: Path, fill: Callable[[Path], object], place: Callable[[Path], Path]):
    """`fill(tmp)` fills a temporary folder in `parent`; `place(tmp)` renames it to its final
    name (`replacing`, `unless_present`, `next_version`) and returns that path. On any failure
    the temporary folder is removed."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f"{HIDDEN}tmp-"))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a server may run as another user
        for path in [*tmp.rglob("*"), tmp]:  # files first, then the folders that name them
            _sync(path)
        final = place(tmp)
        _sync(parent)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replacing(path: Path) -> Callable[[Path], Path]:
    """Placement that swaps `path` to the new folder (an older one is moved aside first: a
    directory cannot be renamed over a non-empty one)."""
    return lambda tmp: _place(tmp, path, keep_existing=False)


def unless_present(path: Path) -> Callable[[Path], Path]:
    """Placement for content that is the same whenever written (a backup of one step): an
    existing `path` is kept."""
    return lambda tmp: _place(tmp, path, keep_existing=True)


def _place(tmp: Path, path: Path, keep_existing: bool) -> Path:
    if not path.exists():
        os.rename(tmp, path)
    elif keep_existing:
        shutil.rmtree(tmp)
    elif _exchange(tmp, path):  # no moment without `path`
        shutil.rmtree(tmp)  # now the old folder
    else:
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{HIDDEN}old-"))
        os.rename(path, old / path.name)
        os.rename(tmp, path)
        shutil.rmtree(old)
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux' renameat2 RENAME_EXCHANGE); False where the system
    or the file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, exchange = -100, 2
    return renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0


def _sync(path: Path):
    """Flushes a file's content, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def next_version(base: Path) -> Callable[[Path], Path]:
    """Placement as the next free numbered version in `base` (TF Serving's layout). os.rename
    refuses a non-empty target, so a version written meanwhile is never replaced."""

    def place(tmp: Path) -> Path:
        while True:
            versions = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
            final = base / str(max(versions, default=0) + 1)
            try:
                os.rename(tmp, final)
                return final
            except OSError:
                if not final.exists():
                    raise

    return place
