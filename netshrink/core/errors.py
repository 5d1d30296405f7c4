"""User-facing errors: each carries a one-line message saying what was wrong and what to do."""

import re

#: terminal colour and cursor codes (ECMA-48 CSI sequences) some libraries put in their messages
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class NetshrinkError(Exception):
    """Base of every error netshrink raises on bad input; the CLI prints it as one line."""


class DataError(NetshrinkError):
    """A data set is missing, malformed or inconsistent."""


class ConfigError(NetshrinkError):
    """A config or command-line value is out of range or unknown."""


class NetshrinkFormatError(NetshrinkError):
    """A file is not a valid netshrink file (or checkpoint); raised before anything is decoded."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message folded onto one line and cut to ``limit`` characters (its type name
    when it has no message), terminal escape codes removed: for wrapping library errors into
    netshrink's one-line errors."""
    return " ".join(_ESCAPES.sub("", str(error)).split())[:limit] or type(error).__name__
