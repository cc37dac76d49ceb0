"""The RSICRC encoder: shared CLIP backbone, attentive encoder over both images, fusion, pooling.

Module and attribute names follow the released state dict (`encoder.*`), so the checkpoint
loads unchanged; the quirks of the official code (v = to_k(x), swapped position tables,
transposed map) are reproduced on purpose because the weights were trained with them.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..config import IMAGE_SIZE
from .embedding import Embedding
from .resnet_trunk import resnet_trunk


def build_backbone(spec):
    """The open_clip image tower as the official code keeps it (keys encoder.encoder.net.*)."""
    if spec["kind"] == "resnet":
        return resnet_trunk(spec["layers"], spec["width"])
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(image_size=IMAGE_SIZE, patch_size=spec["patch_size"], width=spec["width"],
                             layers=spec["layers"], heads=spec["heads"], mlp_ratio=4.0,
                             output_dim=spec["output_dim"], output_tokens=True)


class ImageEncoder(nn.Module):
    # The ResNet runs channels-last (oneDNN's fast convolution layout; about 1.4x on a CPU) and,
    # on a CPU, on a few images at a time, whose activations stay in cache (another 1.2x). A GPU
    # takes the whole batch: in chunks of 4 it waits on 128 times more kernel launches.
    RESNET_CHUNK = 4

    def __init__(self, spec, d_model):
        super().__init__()
        self.kind = spec["kind"]
        self.grid = spec["grid"]
        self.net = build_backbone(spec)
        self.proj = nn.Conv2d(spec["feat_dim"], d_model, 1) if spec["feat_dim"] != d_model else None

    def use_channels_last(self):
        if self.kind == "resnet":
            self.net.to(memory_format=torch.channels_last)
        return self

    def trunk_features(self, images):
        """The backbone's feature map (B, feat_dim, grid, grid), before the projection."""
        if self.kind == "resnet":
            chunk = self.RESNET_CHUNK if images.device.type == "cpu" else len(images)
            chunks = images.contiguous(memory_format=torch.channels_last).split(max(1, chunk))
            return torch.cat([self.net(chunk) for chunk in chunks]).contiguous()
        _, tokens = self.net(images)
        b, n, c = tokens.shape
        return tokens.reshape(b, self.grid, self.grid, c).permute(0, 3, 1, 2)

    def project(self, feats):
        return self.proj(feats) if self.proj is not None else feats

    def forward(self, images):
        return self.project(self.trunk_features(images))


class Attention(nn.Module):
    def __init__(self, dim, a_dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (a_dim // heads) ** -0.5
        self.to_q = nn.Linear(dim, a_dim, bias=False)
        self.to_k = nn.Linear(dim, a_dim, bias=False)
        self.to_v = nn.Linear(dim, a_dim, bias=False)  # in the file, unused by the official forward
        project_out = not (heads == 1 and a_dim == dim)
        self.to_out = nn.Sequential(nn.Linear(a_dim, dim), nn.Dropout(0.0)) if project_out else nn.Identity()

    def forward(self, x):
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.to_k(x).view(b, n, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, k, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.0), nn.Linear(hidden, dim))

    def forward(self, x):
        return self.net(x)


class AttentiveBlock(nn.Module):
    """Post-norm transformer block: y = LN1(att(x) + x); y = LN2(ff(y) + y)."""

    def __init__(self, dim, a_dim, h_dim, heads):
        super().__init__()
        self.att = Attention(dim, a_dim, heads)
        self.feedforward = FeedForward(dim, h_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.norm1(self.att(x) + x)
        return self.norm2(self.feedforward(x) + x)


class AttentiveEncoder(nn.Module):
    def __init__(self, grid, d_model, layers, a_dim, h_dim, heads):
        super().__init__()
        self.h_embedding = Embedding(grid, d_model // 2)
        self.w_embedding = Embedding(grid, d_model // 2)
        self.selftrans = nn.ModuleList(
            nn.ModuleList([AttentiveBlock(d_model, a_dim, h_dim, heads),
                           AttentiveBlock(2 * d_model, a_dim, h_dim, heads)])
            for _ in range(layers))

    def position_map(self, h, w):
        rows = self.w_embedding.weight[:h]                     # indexed by row i
        cols = self.h_embedding.weight[:w]                     # indexed by column j
        return torch.cat([cols.unsqueeze(0).expand(h, w, -1), rows.unsqueeze(1).expand(h, w, -1)], dim=-1)

    def forward(self, f1, f2):
        b, c, h, w = f1.shape
        pos = self.position_map(h, w).reshape(h * w, c).to(f1.dtype)
        x1 = f1.flatten(2).transpose(1, 2) + pos
        x2 = f2.flatten(2).transpose(1, 2) + pos
        a1, a2 = x1, x2
        for single, joint in self.selftrans:
            # The same block for both images: one batched call.
            a1, a2 = (single(torch.cat([a1, a2], dim=0)) + torch.cat([a1, a2], dim=0)).split(b, dim=0)
            fused = joint(torch.cat([a1, a2], dim=-1))
            a1 = fused[..., :c] + x1
            a2 = fused[..., c:] + x2
        # (B, h*w, C) -> (B, C, w, h): the official code swaps the spatial axes here.
        return (a1.reshape(b, h, w, c).transpose(-1, 1), a2.reshape(b, h, w, c).transpose(-1, 1))


class ResBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        half = channels // 2
        self.left = nn.Sequential(
            nn.Conv2d(channels, half, 1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x):
        return F.relu(x + self.left(x))


class PairEncoder(nn.Module):
    """Two preprocessed images -> visual tokens for the decoder and a pooled pair vector."""

    def __init__(self, cfg):
        super().__init__()
        spec = cfg.backbone_spec
        d = cfg.d_model
        self.encoder = ImageEncoder(spec, d)
        self.encoder_trans = AttentiveEncoder(spec["grid"], d, cfg.encoder_layers, cfg.a_dim,
                                              cfg.h_dim, cfg.num_heads)
        self.Conv1 = nn.Conv2d(2 * d, d, 1)
        self.LN = ResBlock(d)
        self.img_queries = nn.Parameter(torch.zeros(1, d))
        self.att_pool = nn.MultiheadAttention(d, cfg.num_heads)
        self.att_pool_norm = nn.LayerNorm(d)

    def forward(self, before, after):
        """-> (memory (B, h*w, C) batch-first, pooled (B, C) not normalised)."""
        n = before.shape[0]
        feats = self.encoder(torch.cat([before, after], dim=0))
        return self.from_features(feats[:n], feats[n:])

    def from_features(self, f1, f2):
        """forward from the image features (self.encoder's output) of the BEFORE and AFTER images."""
        n = f1.shape[0]
        m1, m2 = self.encoder_trans(f1, f2)
        sim = F.cosine_similarity(m1, m2, dim=1).unsqueeze(1)
        x = self.LN(self.Conv1(torch.cat([m1, m2], dim=1) + sim))
        # Contiguous copies: a linear layer on a strided 3-D input runs as a batched matmul with
        # the weight repeated per row (the cross keys/values and the pool's projections ran
        # 2-4x slower that way).
        memory = x.flatten(2).transpose(1, 2).contiguous()
        query = self.img_queries.to(memory.dtype).unsqueeze(1).expand(-1, n, -1)
        seq_first = memory.transpose(0, 1).contiguous()
        pooled, _ = self.att_pool(query, seq_first, seq_first, need_weights=False)
        return memory, self.att_pool_norm(pooled[0])
