"""The one exception type for mistakes a user can fix (config, files, data, weights).

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in what the user gave us; the message must name the file/key/record."""

    exit_code = 2


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after writing its checkpoint: the CLI prints the message
    and exits with the conventional status 128 + signal (130 for Ctrl-C, 143 for SIGTERM), so
    no script mistakes it for a finished run."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
