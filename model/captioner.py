"""Captioner: the public face of the RSICRC model (captions, embeddings, change scores)."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import change_score as _change
from .device import exact_fp32, resolve_device, resolve_dtype
from .errors import ModelLoadError
from .loading import DEFAULT_SOURCE, WEIGHTS, load_checked_network, read_config, read_vocab, resolve_source
from .preprocess import preprocess as _preprocess


@dataclass
class PairResult:
    captions: list
    embeddings: torch.Tensor      # (N, d) float32 CPU, L2-normalised
    change_scores: torch.Tensor   # (N,) float32 CPU in [0, 1]
    changed: list                 # caption is not a "no change" sentence
    attention: torch.Tensor = None  # with attention=True: (N, h, w) float32 CPU, row 0 at the top


def load_model(source=DEFAULT_SOURCE, device="auto", dtype=None, revision=None):
    """Load RSICRC from a Hugging Face repo id or a local folder; ModelLoadError says what is wrong."""
    try:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    resolved = resolve_source(source, revision)
    folder = resolved.folder
    cfg, raw_cfg = read_config(folder)
    vocab = read_vocab(folder)
    net, sha256 = load_checked_network(cfg, vocab, folder / WEIGHTS)
    exact_fp32(dev, dt)
    net = net.to(device=dev, dtype=dt)
    net.encoder.encoder.use_channels_last()
    # A folder is recorded absolute: outputs keep the source for later searches from elsewhere.
    recorded = resolved.repo_id or str(folder)
    return Captioner(net, vocab, cfg, raw_cfg, source=recorded, sha256=sha256,
                     device=dev, dtype=dt)


class Captioner:
    def __init__(self, net, vocab, cfg, raw_config, source, sha256, device, dtype):
        self.net = net
        self.vocab = vocab
        self.cfg = cfg
        self.config = dict(raw_config)
        self.source = source
        self.sha256 = sha256
        self.device = device
        self.dtype = dtype
        sentences = _change.sentence_token_ids(vocab)
        self._no_change = _change.NoChangeScorer(sentences, vocab.pad) if sentences else None

    @property
    def embedding_dim(self):
        return self.cfg.d_model

    @property
    def precision(self):
        """The number format as the run options name it: fp32, bf16 or fp16."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    # -- images -----------------------------------------------------------------------------
    def preprocess(self, images):
        """uint8 RGB (N, 3, H, W) -> float32 (N, 3, 224, 224) on the model's device."""
        return _preprocess(images, device=self.device)

    def _inputs(self, before, after):
        if before.shape != after.shape or before.dim() != 4:
            raise ValueError(f"before and after must be preprocessed batches of one shape, got "
                             f"{tuple(before.shape)} and {tuple(after.shape)}")
        return (before.to(self.device, self.dtype), after.to(self.device, self.dtype))

    @torch.inference_mode()
    def _encode(self, before, after):
        return self.net.encoder(*self._inputs(before, after))

    @staticmethod
    def _normalised_cpu(x):
        return F.normalize(x.float(), dim=-1).cpu()

    def encode_pairs(self, before, after):
        """Preprocessed pairs -> L2-normalised pair embeddings (N, d), float32 on the CPU."""
        _, pooled = self._encode(before, after)
        return self._normalised_cpu(pooled)

    @torch.inference_mode()
    def _greedy(self, memory, cross_kv=None, attention=False):
        return self.net.decoder.greedy(memory, self.vocab.start, self.vocab.end, cross_kv, attention)

    def _attention_maps(self, weights):
        """Token weights (N, h*w) -> maps (N, h, w) on the image grid.

        The visual tokens come from the encoder's map with its spatial axes swapped (token
        col * h + row), so they are read as (N, w, h) and transposed back."""
        side = self.cfg.backbone_spec["grid"]
        return weights.reshape(-1, side, side).transpose(1, 2).contiguous().cpu()

    def generate(self, before, after):
        """Greedy token ids per pair: START first, END last when reached."""
        memory, _ = self._encode(before, after)
        return self._greedy(memory)

    def caption(self, before, after):
        return [self.vocab.decode(ids) for ids in self.generate(before, after)]

    def caption_and_embed(self, before, after):
        """Captions and pair embeddings from one encoder pass."""
        memory, pooled = self._encode(before, after)
        captions = [self.vocab.decode(ids) for ids in self._greedy(memory)]
        return captions, self._normalised_cpu(pooled)

    @torch.inference_mode()
    def describe_pairs(self, before, after, attention=False):
        """Captions, embeddings, change scores and the changed flag from one encoder pass.

        attention=True adds where the decoder looked: per pair, the mean over its greedy steps
        of the last cross-attention layer's head-averaged weights, as an image-grid map."""
        return self._described(*self._encode(before, after), attention)

    @torch.inference_mode()
    def describe_dates(self, images, before_rows, after_rows, attention=False):
        """describe_pairs(images[before_rows], images[after_rows], attention), with the image
        backbone run once per image: in a time series the middle dates are the AFTER of one
        interval and the BEFORE of the next. images: preprocessed (N, 3, 224, 224)."""
        if images.dim() != 4:
            raise ValueError(f"images must be a preprocessed batch, got shape {tuple(images.shape)}")
        feats = self.net.encoder.encoder(images.to(self.device, self.dtype))
        rows = [torch.as_tensor(r, dtype=torch.long, device=feats.device) for r in (before_rows, after_rows)]
        return self._described(*self.net.encoder.from_features(feats[rows[0]], feats[rows[1]]), attention)

    @torch.inference_mode()
    def describe_trunk_features(self, before, after, attention=False):
        """describe_pairs from the image backbone's outputs (`ImageEncoder.trunk_features`) of the
        BEFORE and AFTER images: what a caller that keeps those features (training) runs."""
        image_encoder = self.net.encoder.encoder
        before, after = (image_encoder.project(f.to(self.device, self.dtype)) for f in (before, after))
        return self._described(*self.net.encoder.from_features(before, after), attention)

    def _described(self, memory, pooled, attention):
        cross_kv = self.net.decoder.cross_keys_values(memory)  # shared by decoding and scoring
        maps = None
        decoded = self._greedy(memory, cross_kv, attention)
        if attention:
            decoded, weights = decoded
            maps = self._attention_maps(weights)
        captions = [self.vocab.decode(ids) for ids in decoded]
        changed = [not self.is_no_change(c) for c in captions]
        if self._no_change is not None:
            scores = self._no_change(self.net.decoder, cross_kv).float().cpu()
        else:  # a vocabulary without any "no change" sentence: only the caption can tell
            scores = torch.tensor([1.0 if c else 0.0 for c in changed])
        return PairResult(captions, self._normalised_cpu(pooled), scores, changed, maps)

    @torch.inference_mode()
    def batch_for_free_memory(self, tile_size=256, most=4096, share=0.7, probe=8):
        """On a CUDA GPU: the largest power-of-two batch of tile pairs, at most `most`, whose
        describe_pairs from uint8 tiles of `tile_size` px fits in `share` of the memory free now,
        scaled from the peak of one `probe`-pair batch run here; None on other devices."""
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        tiles = torch.zeros((probe, 3, tile_size, tile_size), dtype=torch.uint8)
        self.describe_pairs(self.preprocess(tiles), self.preprocess(tiles))
        per_pair = max(1.0, (torch.cuda.max_memory_allocated(self.device) - base) / probe)
        free, _ = torch.cuda.mem_get_info(self.device)
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        fits = int(share * free / per_pair)
        return max(1, min(most, 1 << max(0, fits.bit_length() - 1)))

    # -- text -------------------------------------------------------------------------------
    def tokenize(self, text):
        return self.vocab.tokenize(text)

    def unknown_words(self, text):
        return self.vocab.tokenize(text).unknown

    @staticmethod
    def is_no_change(caption):
        return _change.is_no_change(caption)

    def embed_text(self, texts):
        """Texts -> L2-normalised embeddings (N, d): uni-decoder state at the END token."""
        if isinstance(texts, str):
            texts = [texts]
        limit = self.cfg.max_len
        seqs = []
        for text in texts:
            ids = self.vocab.tokenize(text).ids
            if len(ids) > limit:  # the position table ends at max_len: keep the first words
                ids = ids[:limit - 1] + [self.vocab.end]
            seqs.append(ids)
        return self.embed_token_ids(seqs)

    @torch.inference_mode()
    def embed_token_ids(self, seqs):
        """Token id sequences ([START] + ids + [END], at most max_len ids each) -> L2-normalised
        embeddings (N, d): the uni-decoder state at each sequence's last id."""
        seqs = [list(s) for s in seqs]
        if not seqs:
            return torch.zeros(0, self.embedding_dim)
        for s in seqs:
            if not 1 <= len(s) <= self.cfg.max_len:
                raise ValueError(f"a token sequence must hold 1 to {self.cfg.max_len} ids, got {len(s)}")
            if not all(isinstance(i, int) and 0 <= i < len(self.vocab) for i in s):
                raise ValueError(f"token ids must be whole numbers below {len(self.vocab)}, got {s}")
        longest = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), longest), self.vocab.pad, dtype=torch.long, device=self.device)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, device=self.device)
        states = self.net.decoder.text_states(ids)
        last = torch.tensor([len(s) - 1 for s in seqs], device=self.device)
        return self._normalised_cpu(states[torch.arange(len(seqs), device=self.device), last])


__all__ = ["Captioner", "PairResult", "load_model", "ModelLoadError"]
