"""The command lines: `bert-keras <command>` and `python -m bert_keras.<command>`.

    bert-keras train --flagfile=configs/emotion.flags
    bert-keras predict --export_dir=runs/emotion/export/emotion "i feel great"

Each command's module (`MODULES`) has `define_flags(values)` and `main(argv)`; its flags are
defined here, in absl's FLAGS, when the command starts, never when a module is imported. Bad
input ends a command with one line, `error: ...`, and exit status 2 (`errors.exit_on_usage_error`).
"""

import importlib
import sys

COMMANDS = {
    "train": "fine-tune an encoder on a data set, test it and export it",
    "evaluate": "reports of a run's best checkpoint or an export on a split",
    "export": "export a run again, as the next SavedModel version",
    "predict": "classify texts with an export (JSON Lines)",
    "search": "search the trainer's hyperparameters within a budget",
}
# The module of each command's work (`evaluate`, `export` and `search` are also the Python API's
# functions, in the package's namespace).
MODULES = {"evaluate": "evaluation", "export": "exporting", "search": "searching"}


def main():
    """`bert-keras <command> [flags]` (the console script)."""
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        listed = "\n".join(f"  {name:<9} {what}" for name, what in COMMANDS.items())
        given = f"unknown command {sys.argv[1]!r}; " if len(sys.argv) > 1 else ""
        out = sys.stdout if sys.argv[1:2] in (["-h"], ["--help"]) else sys.stderr
        print(
            f"{given}usage: bert-keras <command> [--flags], --help after a command lists its "
            f"flags.\n{listed}",
            file=out,
        )
        sys.exit(0 if out is sys.stdout else 2)
    command = sys.argv[1]
    sys.argv = [f"{sys.argv[0]} {command}", *sys.argv[2:]]
    from bert_keras import logs

    logs.command_line_start()  # before the command's module imports TensorFlow
    start(command)


def start(command: str):
    """Defines the command's flags and runs its `main` (absl's app)."""
    from absl import app, flags

    from bert_keras.errors import parse_flags

    module = importlib.import_module(f"bert_keras.{MODULES.get(command, command)}")
    own = flags.FlagValues()
    module.define_flags(own)
    flags.FLAGS.append_flag_values(own)
    for name in own:  # `--help` lists them (absl: the key flags of sys.argv[0])
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    app.run(module.main, flags_parser=parse_flags)


def run_command(argv: list[str], work):
    """A command's `main`: the libraries' INFO logs off, no arguments but flags, and `work()`
    with bad input reported in one line."""
    from bert_keras import logs
    from bert_keras.errors import exit_on_usage_error, no_arguments

    logs.quiet_libraries()
    exit_on_usage_error(no_arguments, argv)
    return exit_on_usage_error(work)
