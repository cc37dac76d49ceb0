"""The training state on disk: what a resumed run needs to give the weights an uninterrupted run gives.

`state.pt` holds the learning part of the network (every tensor outside the frozen modules), the
optimiser and schedule, where the run is (epoch, batch, step), the history of the epochs and the
fingerprint of the run (settings, data, starting weights). `best.pt` holds the learning part at
the best epoch. Each is written to a temporary file and moved into place, so an interruption
leaves the previous one whole.
"""
import os

import torch

STATE = "state.pt"
BEST = "best.pt"


def frozen_prefixes(freeze_backbone, freeze_encoder):
    if freeze_encoder:
        return ("encoder.",)
    return ("encoder.encoder.net.",) if freeze_backbone else ()


def learning_part(net, prefixes):
    return {k: v.detach().clone() for k, v in net.state_dict().items() if not k.startswith(prefixes)}


def load_learning_part(net, part, prefixes):
    missing, unexpected = net.load_state_dict(part, strict=False)
    wrong = [k for k in missing if not k.startswith(prefixes)] + list(unexpected)
    if wrong:
        raise ValueError(f"the saved training state does not fit the network ({', '.join(wrong[:5])})")


def save_state(folder, name, payload):
    path = os.path.join(folder, name)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_state(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
