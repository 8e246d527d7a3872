"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class Interrupted(Exception):
    """Training stopped by a signal (Ctrl-C, SIGTERM) after saving; the message says how to resume."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UserError(Exception):
    """A mistake in the user's input (path, data, option): the message says what is wrong and how to fix it."""


def warn(message: str) -> None:
    """A warning for the user: one line on standard error (not Python's warnings, which print source lines)."""
    import sys

    print(f"imgclf: warning: {message}", file=sys.stderr, flush=True)
