"""A command line's start: quiet (the first lines a user sees are bert_keras' own) and fast.

Without it a run opens with TensorFlow's C++ start-up lines (CUDA probing on a CPU machine,
`failed call to cuInit`, CPU feature lists, oneDNN notes), transformers' "PyTorch was not found"
and absl's INFO lines. `BERT_KERAS_VERBOSE=1` (any value but 0) brings them all back; a user's
own setting of each library's variable always wins. Library use (`import bert_keras`) changes
none of this: the host program owns its environment and its logs.
"""

import contextlib
import os
import sys

VARIABLE = "BERT_KERAS_VERBOSE"

# Read by the libraries when they are imported: set before TensorFlow and transformers load.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ log lines; errors still raise exceptions
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "HF_HUB_VERBOSITY": "error",  # "Repo card metadata block was not found" for a folder
}


def verbose() -> bool:
    return os.environ.get(VARIABLE, "0") not in ("", "0")


def speed_defaults():
    """TensorFlow's oneDNN kernels, on by default only on some Intel CPUs, are faster on the others
    too (docs/performance.md); oneDNN keeps a compiled kernel per operation shape, 1,024 by
    default, and batches padded to their own longest row make more shapes than that. Read when
    TensorFlow loads: set only if it has not, and a user's own setting wins."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")


def started_as_a_command() -> bool:
    """`python -m bert_keras.<command>`: the package is imported before the command's module,
    while sys.argv[0] is still "-m" (as Python documents), and the original command line names
    the module."""
    argv = getattr(sys, "orig_argv", [])
    if sys.argv[:1] != ["-m"] or "-m" not in argv[:-1]:
        return False
    return argv[argv.index("-m") + 1].startswith("bert_keras.")


def command_line_start():
    """A command line's start, before TensorFlow is imported: the speed defaults, and the
    libraries quiet (`quiet_environment`)."""
    speed_defaults()
    quiet_environment()


def quiet_environment():
    """TensorFlow's shared libraries log as they load, before its log level is read
    (tensorflow/tensorflow#100442): TensorFlow is imported here with the process's stderr
    closed."""
    if verbose():
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    with _stderr_discarded():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _stderr_discarded():
    """File descriptor 2 to /dev/null (C++ writes to it directly), then back. An exception is
    raised after it is back, so its traceback is seen."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_libraries():
    """Called by each command line's `main`: Python-side INFO logs (absl's, through which
    TensorFlow reports SavedModel internals) to warnings."""
    if verbose():
        return
    from absl import logging

    logging.set_verbosity(logging.WARNING)
