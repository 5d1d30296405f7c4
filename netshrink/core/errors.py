"""User-facing errors: each carries a one-line message saying what was wrong and what to do."""


class NetshrinkError(Exception):
    """Base of every error netshrink raises on bad input; the CLI prints it as one line."""


class DataError(NetshrinkError):
    """A data set is missing, malformed or inconsistent."""


class ConfigError(NetshrinkError):
    """A config or command-line value is out of range or unknown."""


class NetshrinkFormatError(NetshrinkError):
    """A file is not a valid netshrink file (or checkpoint); raised before anything is decoded."""
