"""The official RSICRC inference, re-implemented op for op: the baseline of `bench_model.py`.

What the official code (rogerferrod/RSICRC, `src/model.py` and `src/eval.py` inference()) does
for one tile pair, and what this module does the same way:
- preprocessing: open_clip's validation transform on a PIL image (resize, centre crop, tensor,
  normalise), one image at a time;
- encoder: the backbone called once per image; attentive blocks computing attention as
  matmul-softmax-matmul, with the keys projection run twice (v = to_k(x), as the official code);
  the position table built and repeated per call; the fusion and the attention pool;
- decoder: for each new token the whole prefix goes through every layer again (no cache):
  nn.MultiheadAttention self-attention with a causal mask, cross-attention with its weights
  returned (need_weights=True), the vocabulary projection of every position, top-1 of the last;
- one pair at a time, under torch.no_grad() with the model in eval mode.

It loads the released state dict unchanged (the same key names), so it runs the same weights as
rsicrc's own network, and its tokens must equal rsicrc's. Benchmark-only code: rsicrc never
imports it.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rsicrc.model.config import IMAGE_SIZE
from rsicrc.model.net.encoder import Attention, ResBlock, build_backbone


def _official_backbone(spec):
    """The image tower as the official code builds it: open_clip's own ModifiedResNet, less its
    attention pool (rsicrc's resnet_trunk is a copy of it, tested equal)."""
    if spec["kind"] != "resnet":
        return build_backbone(spec)
    from open_clip.modified_resnet import ModifiedResNet

    tower = ModifiedResNet(layers=spec["layers"], output_dim=spec["output_dim"], heads=spec["heads"],
                           image_size=IMAGE_SIZE, width=spec["width"])
    return nn.Sequential(*list(tower.children())[:14])


class _OfficialAttention(Attention):
    """rsicrc's Attention's weights (the official module's), with the official forward."""

    def _heads(self, x):  # einops 'b n (h d) -> b h n d'
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).permute(0, 2, 1, 3)

    def forward(self, x1, x2, x3):
        q, k, v = self._heads(self.to_q(x1)), self._heads(self.to_k(x2)), self._heads(self.to_k(x3))
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).permute(0, 2, 1, 3)
        return self.to_out(out.reshape(out.shape[0], out.shape[1], -1))


class _OfficialBlock(nn.Module):
    def __init__(self, dim, a_dim, h_dim, heads):
        super().__init__()
        self.att = _OfficialAttention(dim, a_dim, heads)
        self.feedforward = nn.Module()
        self.feedforward.net = nn.Sequential(nn.Linear(dim, h_dim), nn.ReLU(), nn.Dropout(0.0),
                                             nn.Linear(h_dim, dim), nn.Dropout(0.0))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x1, x2, x3):
        x = self.norm1(self.att(x1, x2, x3) + x1)
        return self.norm2(self.feedforward.net(x) + x)


class _OfficialEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        spec, d = cfg.backbone_spec, cfg.d_model
        self.kind, self.grid, self.feat_dim = spec["kind"], spec["grid"], spec["feat_dim"]
        self.encoder = nn.Module()
        self.encoder.net = _official_backbone(spec)
        self.encoder.proj = nn.Conv2d(spec["feat_dim"], d, 1) if spec["feat_dim"] != d else None
        self.encoder_trans = nn.Module()
        self.encoder_trans.h_embedding = nn.Embedding(self.grid, d // 2)
        self.encoder_trans.w_embedding = nn.Embedding(self.grid, d // 2)
        self.encoder_trans.selftrans = nn.ModuleList(
            nn.ModuleList([_OfficialBlock(d, cfg.a_dim, cfg.h_dim, cfg.num_heads),
                           _OfficialBlock(2 * d, cfg.a_dim, cfg.h_dim, cfg.num_heads)])
            for _ in range(cfg.encoder_layers))
        self.Conv1 = nn.Conv2d(2 * d, d, 1)
        self.LN = ResBlock(d)
        self.img_queries = nn.Parameter(torch.zeros(1, d))
        self.att_pool = nn.MultiheadAttention(d, cfg.num_heads)
        self.att_pool_norm = nn.LayerNorm(d)

    def _features(self, image):
        feat = self.encoder.net(image)
        if self.kind != "resnet":
            feat = feat[1].reshape(-1, self.grid, self.grid, self.feat_dim).permute(0, 3, 1, 2)
        return self.encoder.proj(feat) if self.encoder.proj is not None else feat

    def _attentive(self, img1, img2):
        t = self.encoder_trans
        batch, c, h, w = img1.shape
        embed_h = t.w_embedding(torch.arange(h, device=img1.device))
        embed_w = t.h_embedding(torch.arange(w, device=img1.device))
        pos = torch.cat([embed_w.unsqueeze(0).repeat(h, 1, 1), embed_h.unsqueeze(1).repeat(1, w, 1)], dim=-1)
        pos = pos.permute(2, 0, 1).unsqueeze(0).repeat(batch, 1, 1, 1)
        img1 = (img1 + pos).view(batch, c, -1).transpose(-1, 1)
        img2 = (img2 + pos).view(batch, c, -1).transpose(-1, 1)
        sa1, sa2 = img1, img2
        for single, joint in t.selftrans:
            sa1 = single(sa1, sa1, sa1) + sa1
            sa2 = single(sa2, sa2, sa2) + sa2
            img = torch.cat([sa1, sa2], dim=-1)
            img = joint(img, img, img)
            sa1, sa2 = img[:, :, :c] + img1, img[:, :, c:] + img2
        return sa1.reshape(batch, h, w, c).transpose(-1, 1), sa2.reshape(batch, h, w, c).transpose(-1, 1)

    def forward(self, img1, img2):
        x1, x2 = self._attentive(self._features(img1), self._features(img2))
        x = torch.cat([x1, x2], dim=1) + F.cosine_similarity(x1, x2, dim=1).unsqueeze(1)
        x = self.LN(self.Conv1(x))
        x = x.view(x.size(0), x.size(1), -1).permute(2, 0, 1)  # h*w, batch, dim
        queries = self.img_queries.unsqueeze(1).repeat(1, x.shape[1], 1)
        pooled = self.att_pool_norm(self.att_pool(queries, x, x, need_weights=False)[0])
        return pooled[0], x


class _OfficialDecoderLayer(nn.Module):
    def __init__(self, d, heads, prenorm, cross):
        super().__init__()
        self.prenorm, self.cross = prenorm, cross
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.1)
        if cross:
            self.cross_attn = nn.MultiheadAttention(d, heads, dropout=0.1, kdim=d, vdim=d)
            self.mha_norm = nn.LayerNorm(d)
        self.ff_linear1 = nn.Linear(d, 4 * d)
        self.ff_linear2 = nn.Linear(4 * d, d)
        self.sa_norm = nn.LayerNorm(d)
        self.ff_norm = nn.LayerNorm(d)
        self.activation = nn.GELU()

    def _sa(self, x, mask):
        return self.self_attn(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]

    def _mha(self, x, mem):
        return self.cross_attn(x, mem, mem, need_weights=True)[0]

    def _ff(self, x):
        return self.ff_linear2(self.activation(self.ff_linear1(x)))

    def forward(self, x, mem, mask):
        if self.prenorm:
            x = x + self._sa(self.sa_norm(x), mask)
            if self.cross:
                x = x + self._mha(self.mha_norm(x), mem)
            return x + self._ff(self.ff_norm(x))
        x = self.sa_norm(x + self._sa(x, mask))
        if self.cross:
            x = self.mha_norm(x + self._mha(x, mem))
        return self.ff_norm(x + self._ff(x))


class _OfficialDecoder(nn.Module):
    def __init__(self, cfg, vocab_size):
        super().__init__()
        d = cfg.d_model
        self.learnable = cfg.learnable
        self.tokens_embed = nn.Embedding(vocab_size, d)
        self.position_encoding = nn.Module()
        if cfg.learnable:
            self.position_encoding.pos_emb = nn.Embedding(cfg.max_len, d)
        else:
            self.position_encoding.register_buffer("pe", torch.zeros(1, cfg.max_len, d))
        self.uni_decoder = nn.ModuleList(_OfficialDecoderLayer(d, cfg.num_heads, cfg.prenorm, False)
                                         for _ in range(cfg.decoder_layers))
        self.cross_decoder = nn.ModuleList(_OfficialDecoderLayer(d, cfg.num_heads, cfg.prenorm, True)
                                           for _ in range(cfg.decoder_layers))
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.tokens_embed.weight = self.lm_head.weight

    def forward(self, input_ids, memory):
        n = input_ids.shape[1]
        mask = ~torch.tril(torch.ones(n, n, device=input_ids.device)).bool()
        x = self.tokens_embed(input_ids)
        if self.learnable:
            x = x + self.position_encoding.pos_emb(torch.arange(n, device=input_ids.device).unsqueeze(0))
        else:
            x = x + self.position_encoding.pe[:, :n, :]
        x = x.permute(1, 0, 2)
        for block in self.uni_decoder:
            x = block(x, None, mask)
        for block in self.cross_decoder:
            x = block(x, memory, mask)
        return self.lm_head(x).permute(1, 0, 2)


class OfficialModel(nn.Module):
    def __init__(self, cfg, vocab_size):
        super().__init__()
        self.max_len = cfg.max_len
        self.encoder = _OfficialEncoder(cfg)
        self.decoder = _OfficialDecoder(cfg, vocab_size)


def load_official(folder, device="cpu"):
    """The official network on `device` with a checkpoint folder's weights (strict: every key)."""
    from rsicrc.model.loading import read_config, read_state_dict, read_vocab

    cfg, _ = read_config(folder)
    vocab = read_vocab(folder)
    model = OfficialModel(cfg, len(vocab))
    state = read_state_dict(folder / "pytorch_model.bin")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device), vocab


def official_transform():
    """open_clip's validation transform for a 224 px backbone (PIL in, normalised tensor out)."""
    from open_clip import image_transform

    return image_transform(224, is_train=False)


def official_pair(model, vocab, transform, before, after):
    """One tile pair the official way: uint8 (3, H, W) arrays -> (token ids, pair embedding)."""
    from PIL import Image

    img1 = transform(Image.fromarray(np.ascontiguousarray(before.transpose(1, 2, 0)))).unsqueeze(0)
    img2 = transform(Image.fromarray(np.ascontiguousarray(after.transpose(1, 2, 0)))).unsqueeze(0)
    return official_tokens(model, vocab, img1, img2)


def official_tokens(model, vocab, img1, img2):
    """The official greedy loop on one preprocessed pair (1, 3, 224, 224) each, on the model's device."""
    device = next(model.parameters()).device
    with torch.no_grad():
        pooled, memory = model.encoder(img1.to(device), img2.to(device))
        ids = torch.tensor([[vocab.start]], dtype=torch.long, device=device)
        for _ in range(model.max_len):
            logits = model.decoder(ids, memory)
            nxt = logits[0][-1].topk(1)[1]
            ids = torch.cat([ids, nxt.reshape(1, -1)], dim=1)
            if nxt.item() == vocab.end:
                break
    return ids[0].tolist(), F.normalize(pooled, dim=-1)[0].cpu()


__all__ = ["load_official", "official_transform", "official_pair", "official_tokens"]
