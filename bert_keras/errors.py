"""The one exception a user's input can cause."""


class UsageError(Exception):
    """Bad input: the message is one line that says what is wrong and what to do.

    `train.main` prints it as `error: <message>` and exits with status 2, before any
    run directory is created.
    """
