"""Errors a user can fix. The CLI prints them as one line and exits with code 2 (an export that failed its check:
1)."""
import re

# The command-line flag an error message starts with (``--lr must be positive``), said in Python as the keyword
# argument it is there (``lr must be positive``).
_LEADING_FLAG = re.compile(r"^--([a-z][a-z0-9-]*)")


class Interrupted(Exception):
    """Training stopped by a signal (Ctrl-C, SIGTERM) after saving; the message says how to resume."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UserError(Exception):
    """A mistake in the user's input (path, data, option): the message says what is wrong and how to fix it.

    Messages are written with the command line's names (``--lr``), which :attr:`cli_message` keeps; ``str()``, what
    Python shows, names the option it starts with as the keyword argument (``lr``)."""

    @property
    def cli_message(self) -> str:
        return super().__str__()

    def __str__(self) -> str:
        return _LEADING_FLAG.sub(lambda m: m.group(1).replace("-", "_"), self.cli_message)


class CheckFailed(UserError):
    """An export written and checked, whose parity check failed: set aside under a name that says so, with its
    figures; the command exits 1."""


def warn(message: str) -> None:
    """A warning for the user: one line on standard error (not Python's warnings, which print source lines)."""
    import sys

    print(f"imgclf: warning: {message}", file=sys.stderr, flush=True)
