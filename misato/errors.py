"""The one exception type for problems a user can fix (bad input, missing weights, wrong options).

The CLI prints a `MisatoError` as a one-line message and exits with code 2; anything else is a bug
(exit 1, with a traceback).
"""
from __future__ import annotations

from collections.abc import Mapping

OPTION = "{option}"
"""Placeholder in a message for the option it is about, spelled as the caller spells it (see :class:`MisatoError`)."""


class MisatoError(Exception):
    """A user-fixable problem: the message names the file or option and says what to do.

    A message about one keyword argument may say :data:`OPTION` where the option's name goes and give its keyword
    name as ``option``: the Python API shows ``name=``, the CLI the command's own flag (:meth:`for_flags`, with the
    flags of the command that ran), so a message never names a flag the command lacks. A caller that hands its
    own argument on under another keyword renames ``option`` (``error.option = "mask_objects"``).
    """

    def __init__(self, message: str, *, option: str | None = None):
        super().__init__(message)
        self.option = option

    def for_flags(self, flags: Mapping[str, str]) -> str:
        """The message with :data:`OPTION` replaced by ``flags[option]`` (a CLI flag), else by ``option=``."""
        message = str(self.args[0]) if self.args else ""
        if self.option is None:
            return message
        return message.replace(OPTION, flags.get(self.option, f"{self.option}="))

    def __str__(self) -> str:
        return self.for_flags({})
