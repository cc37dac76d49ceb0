class ModelLoadError(Exception):
    """A model could not be loaded; the message says why and what to do."""
