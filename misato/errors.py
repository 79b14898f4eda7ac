"""The one exception type for problems a user can fix (bad input, missing weights, wrong options).

The CLI prints a `MisatoError` as a one-line message and exits with code 2; anything else is a bug
(exit 1, with a traceback).
"""


class MisatoError(Exception):
    """A user-fixable problem: the message names the file or option and says what to do."""
