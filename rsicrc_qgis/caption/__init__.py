"""The caption dialog, its task and the job it hands the worker."""
