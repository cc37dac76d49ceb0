"""The whole RSICRC network: `encoder.*` and `decoder.*`, as in the released state dict."""
from torch import nn

from .decoder import CaptionDecoder
from .encoder import PairEncoder


class RsicrcNet(nn.Module):
    def __init__(self, cfg, vocab_size):
        super().__init__()
        self.encoder = PairEncoder(cfg)
        self.decoder = CaptionDecoder(cfg, vocab_size)
