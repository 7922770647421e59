"""The one exception a user's input can cause, and how every command line reports it."""

import signal
import sys

from absl import flags


class UsageError(Exception):
    """Bad input: the message is one line that says what is wrong and what to do.

    `train.main` prints it as `error: <message>` and exits with status 2, before any
    run directory is created.
    """


class TrainingError(Exception):
    """Training cannot go on (the loss went non-finite, a worker was lost): one line that says
    what happened, what was kept and what to do. Exit status 1; the run stays resumable."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT ended the run (`interrupt`): exit status 128 + the signal's number,
    one line saying where it stopped and how to resume. Not an Exception, as KeyboardInterrupt
    is not: code that turns a library's errors into a UsageError must let it through."""

    def __init__(self, signum: int, where: str):
        super().__init__(signum, where)
        self.signum, self.where = signum, where

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return f"stopped by {name} {self.where}; run the same command to resume."


def cause(e: BaseException) -> str:
    """A library's exception as a short one-line cause for a UsageError message."""
    first_line = next(iter(str(e).splitlines()), "")
    return f"{type(e).__name__}: {first_line[:200]}" if first_line else type(e).__name__


def exit_on_usage_error(run, *args):
    """Calls `run(*args)`; a UsageError ends the command with `error: <message>` on stderr and
    exit status 2 (every bert_keras command line reports bad input this way), a TrainingError
    likewise with status 1."""
    try:
        return run(*args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(128 + e.signum)


def no_arguments(argv: list[str]):
    """The flags are the whole command line (`argv[0]` is the program): anything else is bad
    input."""
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for `app.run(main, flags_parser=parse_flags)`: a flag that does not
    exist or a value out of range is bad input like any other, `error: <message>` and exit 2
    (absl's own parser prints "FATAL Flags parsing error" and exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}; see --help.", file=sys.stderr)
        sys.exit(2)
