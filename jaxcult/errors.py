"""The one exception type for mistakes a user can fix (config, files, data, weights).

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in what the user gave us; the message must name the file/key/record."""

    exit_code = 2
