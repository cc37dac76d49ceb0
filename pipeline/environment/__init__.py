"""The worker's Python environment: the base Python, the PyTorch build for this machine, uv, and
the set-up that the dialog and `python -m rsicrc setup` share (standard library only)."""
