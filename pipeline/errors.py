"""Errors the CLI maps to exit codes: BadInput -> 2, PipelineFailure -> 1."""


class BadInput(Exception):
    """The user's input is unusable; the message names the file and the problem (exit code 2)."""

    def __init__(self, message, path=None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class PipelineFailure(Exception):
    """Anything else that stops a run (exit code 1); the message is meant for the user."""
