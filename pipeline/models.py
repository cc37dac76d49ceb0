"""Loading the models for a pipeline command, with load problems reported as bad input.

A model source is something the user gave (a folder, a hub id, or the default that needs the
hub or its cache); every ModelLoadError says what is wrong and what to do, so the CLI shows it
as a one-line input error (exit code 2).
"""
from .errors import BadInput


def load_captioner(source, device, precision=None):
    """precision: fp32 (None), bf16 or fp16 (pipeline/caption_params.PRECISIONS)."""
    from rsicrc.model import ModelLoadError, load_model

    try:
        return load_model(source=source, device=device, dtype=precision)
    except ModelLoadError as e:
        raise BadInput(str(e)) from None


def load_clip_encoder(source, device):
    from rsicrc.model import ModelLoadError
    from rsicrc.model.clip import load_clip

    try:
        return load_clip(source=source, device=device)
    except ModelLoadError as e:
        message = str(e)  # most already start "RS-M-CLIP model ...": said once
        raise BadInput(message if "RS-M-CLIP" in message else f"RS-M-CLIP model: {message}") from None
