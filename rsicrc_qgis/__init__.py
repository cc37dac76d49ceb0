"""The QGIS side of rsicrc: plugin, Processing provider and search dock.

Nothing here imports torch: heavy work runs in a child process `python -m rsicrc ...` of the
configured Python environment (see worker_process.py and environment.py).
"""
