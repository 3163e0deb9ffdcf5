"""The errors a user's mistake raises: one exception whose message names the file (or the
parameter), the field and what was expected."""


class DataError(ValueError):
    """Input data that cannot be used: a missing or unreadable file, an unknown tag, an empty
    clip, arrays of the wrong shape."""


class ParameterError(ValueError):
    """A hyperparameter or option that does not exist or has a value it cannot take."""
