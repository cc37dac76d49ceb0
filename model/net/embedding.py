"""nn.Embedding that leaves a weight on the meta device alone.

The network is built on the meta device and then given the checkpoint's tensors (loading.py).
nn.Embedding initialises its weight with normal_, which on the meta device runs through a
Python reference that imports torch._dynamo: about 2 s of every model load, to fill a tensor
that holds no values. Off the meta device it initialises as nn.Embedding does.
"""
from torch import nn


class Embedding(nn.Embedding):
    def reset_parameters(self):
        if not self.weight.is_meta:
            super().reset_parameters()
