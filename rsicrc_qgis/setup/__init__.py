"""Setting up the worker's environment, and the settings dialog."""
