"""The one exception type users see.

Every problem caused by the user's input (a bad path, an unknown sampler, a corrupt checkpoint)
raises a `DiffuseError` whose message is a single line naming the problem. The CLI prints it and
exits with code 2; the HTTP server turns it into a 4xx. Anything else is a bug and keeps its
traceback.
"""


class DiffuseError(ValueError):
    """A problem with the user's input, explained in one line."""


class DataError(DiffuseError):
    """The training data cannot be used."""


class CheckpointError(DiffuseError):
    """A checkpoint is missing, corrupt or incompatible."""


class RequestError(DiffuseError):
    """A generation request asks for something the model cannot do."""
