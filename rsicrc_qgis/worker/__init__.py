"""The child Python that runs `python -m rsicrc`: its environment, base Python, device and the JSON it answers."""
