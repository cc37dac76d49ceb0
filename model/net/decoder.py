"""The RSICRC caption decoder, with a key/value cache for greedy decoding.

Parameter names follow the released state dict (`decoder.*`). Attention reuses the weights of
torch's MultiheadAttention modules but runs its own projections, so that one step of greedy
decoding attends with the new token only and reads the earlier keys and values from a cache.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .embedding import Embedding


class SinusoidalPositions(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.register_buffer("pe", torch.zeros(1, max_len, d_model))  # stored in the checkpoint

    def table(self):
        return self.pe[0]


class LearnedPositions(nn.Module):
    def __init__(self, max_len, d_model):
        super().__init__()
        self.pos_emb = Embedding(max_len, d_model)

    def table(self):
        return self.pos_emb.weight


def _split_heads(x, heads):
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class CachedAttention:
    """Functional view of an nn.MultiheadAttention's weights: q, k, v projections and output."""

    def __init__(self, mha):
        self.mha = mha
        self.heads = mha.num_heads

    def _proj(self, x, part):
        c = self.mha.embed_dim
        w = self.mha.in_proj_weight[part * c:(part + 1) * c]
        b = self.mha.in_proj_bias[part * c:(part + 1) * c]
        return _split_heads(F.linear(x, w, b), self.heads)

    def query(self, x):
        return self._proj(x, 0)

    def keys_values(self, x):
        return self._proj(x, 1), self._proj(x, 2)

    def queries_keys_values(self, x):
        """All three projections in one matrix product (self-attention reads one input)."""
        qkv = F.linear(x, self.mha.in_proj_weight, self.mha.in_proj_bias)
        return [_split_heads(part, self.heads) for part in qkv.chunk(3, dim=-1)]

    def output(self, q, k, v, causal=False, mask=None):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.mha.out_proj(_merge_heads(out))

    @staticmethod
    def head_mean_weights(q, k):
        """Softmax weights (B, Lq, M) averaged over heads, in float32: what MultiheadAttention
        returns with need_weights=True (scaled_dot_product_attention does not give them)."""
        q, k = q.float(), k.float()
        logits = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
        return logits.softmax(dim=-1).mean(dim=1)


class DecoderLayer(nn.Module):
    def __init__(self, d_model, heads, prenorm, cross):
        super().__init__()
        self.prenorm = prenorm
        self.self_attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.ff_linear1 = nn.Linear(d_model, 4 * d_model)
        self.ff_linear2 = nn.Linear(4 * d_model, d_model)
        self.sa_norm = nn.LayerNorm(d_model)
        self.ff_norm = nn.LayerNorm(d_model)
        if cross:
            self.cross_attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
            self.mha_norm = nn.LayerNorm(d_model)
        else:
            self.cross_attn = None

    def _ff(self, x):
        return self.ff_linear2(F.gelu(self.ff_linear1(x)))

    def _sub_input(self, x, norm):
        return norm(x) if self.prenorm else x

    def _sub_output(self, x, norm, y):
        return x + y if self.prenorm else norm(x + y)

    def _residual(self, x, norm, fn):
        return self._sub_output(x, norm, fn(self._sub_input(x, norm)))

    def self_block(self, x, cache=None, step=None, mask=None):
        """The self-attention sub-block: causal over x, or under the boolean `mask` (L, L) (True:
        attend), or one new position `step` per row against `cache` (see forward)."""
        sa = CachedAttention(self.self_attn)

        def self_attention(h):
            q, k, v = sa.queries_keys_values(h)
            if cache is None:
                return sa.output(q, k, v, causal=mask is None, mask=mask)
            k_buf, v_buf = cache
            k_buf[:, :, step] = k[:, :, 0]
            v_buf[:, :, step] = v[:, :, 0]
            return sa.output(q, k_buf[:, :, :step + 1], v_buf[:, :, :step + 1])

        return self._residual(x, self.sa_norm, self_attention)

    def cross_query(self, x):
        """The cross-attention queries (B, H, L, head_dim): all the cross sub-block reads of x
        before it meets the visual tokens, so a caller may compute them once for many pairs."""
        return CachedAttention(self.cross_attn).query(self._sub_input(x, self.mha_norm))

    def cross_block(self, x, cross_kv, query=None, weights=None):
        """The cross-attention sub-block; `query` is cross_query(x) when the caller has it (x may
        then be one row broadcast against many pairs' keys/values). weights: a list that gets
        the head-averaged attention weights (B, L, M)."""
        ca = CachedAttention(self.cross_attn)
        q = self.cross_query(x) if query is None else query
        if weights is not None:
            weights.append(ca.head_mean_weights(q, cross_kv[0]))
        return self._sub_output(x, self.mha_norm, ca.output(q, *cross_kv))

    def ff_block(self, x):
        return self._residual(x, self.ff_norm, self._ff)

    def forward(self, x, cross_kv=None, cache=None, step=None, attention=False, mask=None):
        """Full causal pass when cache is None (under `mask` instead of causal when given); else
        one new position `step` per row.

        cross_kv: (k, v) of the visual tokens for this layer; cache: (k_buf, v_buf) of shape
        (B, H, max_len, head_dim) that this call fills at position `step`. attention=True
        (cross layers) also returns the head-averaged cross-attention weights (B, L, M).
        """
        x = self.self_block(x, cache, step, mask)
        weights = [] if attention else None
        if self.cross_attn is not None:
            x = self.cross_block(x, cross_kv, weights=weights)
        x = self.ff_block(x)
        return (x, weights[0]) if attention else x


class CaptionDecoder(nn.Module):
    def __init__(self, cfg, vocab_size):
        super().__init__()
        d = cfg.d_model
        self.max_len = cfg.max_len
        self.tokens_embed = Embedding(vocab_size, d)
        positions = LearnedPositions if cfg.learnable else SinusoidalPositions
        self.position_encoding = positions(cfg.max_len, d)
        self.uni_decoder = nn.ModuleList(DecoderLayer(d, cfg.num_heads, cfg.prenorm, cross=False)
                                         for _ in range(cfg.decoder_layers))
        self.cross_decoder = nn.ModuleList(DecoderLayer(d, cfg.num_heads, cfg.prenorm, cross=True)
                                           for _ in range(cfg.decoder_layers))
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tokens_embed.weight

    def embed(self, ids, start=0):
        pos = self.position_encoding.table()[start:start + ids.shape[1]]
        return self.tokens_embed(ids) + pos.to(self.tokens_embed.weight.dtype)

    def cross_keys_values(self, memory):
        return [CachedAttention(layer.cross_attn).keys_values(memory) for layer in self.cross_decoder]

    def text_states(self, ids):
        """Uni-decoder output for token ids (B, L): the text side used for retrieval."""
        x = self.embed(ids)
        for layer in self.uni_decoder:
            x = layer(x)
        return x

    def cross_logits(self, text_states, cross_kv):
        """Teacher-forced logits (B, L, V) from uni-decoder states and the visual keys/values."""
        x = text_states
        for layer, kv in zip(self.cross_decoder, cross_kv):
            x = layer(x, cross_kv=kv)
        return self.lm_head(x)

    def logits(self, ids, memory):
        """Teacher-forced logits (B, L, V) for token ids given visual tokens (B, M, C)."""
        return self.cross_logits(self.text_states(ids), self.cross_keys_values(memory))

    def new_caches(self, memory):
        """Empty self-attention key/value buffers (B, H, max_len, head_dim), one pair per layer."""
        heads = self.uni_decoder[0].self_attn.num_heads
        shape = (memory.shape[0], heads, self.max_len, memory.shape[-1] // heads)
        return [(memory.new_empty(shape), memory.new_empty(shape))
                for _ in range(len(self.uni_decoder) + len(self.cross_decoder))]

    def step(self, token, step, caches, cross_kv, attention=False):
        """One greedy step: logits (B, V) of the next token after `token` (B, 1) at position
        `step`, filling `caches` there; attention=True also returns the last cross layer's
        head-averaged weights (B, 1, M)."""
        x = self.embed(token, start=step)
        for layer, cache in zip(self.uni_decoder, caches):
            x = layer(x, cache=cache, step=step)
        weights = None
        last = len(self.cross_decoder) - 1
        for j, (layer, cache) in enumerate(zip(self.cross_decoder, caches[len(self.uni_decoder):])):
            x = layer(x, cross_kv=cross_kv[j], cache=cache, step=step, attention=attention and j == last)
            if attention and j == last:
                x, weights = x
        logits = self.lm_head(x[:, -1])
        return (logits, weights) if attention else logits

    def greedy(self, memory, start_id, end_id, cross_kv=None, attention=False):
        """Greedy decoding of every row at once; a row leaves the batch when it emits END.

        Returns one list of ids per row: START first, END last when reached, at most max_len
        new ids (as the official loop: the longest prefix fed back is max_len positions).
        attention=True returns (ids, weights): weights (B, M) float32, per row the mean over its
        decoding steps, the one that emits END included, of the last cross-attention layer's
        head-averaged weights over the M visual tokens. That is the official eval.py plot():
        its last full-prefix pass holds one query per emitted token, and causal masking makes
        each equal to the step that emitted it.
        """
        n = memory.shape[0]
        device = memory.device
        outputs = [[start_id] for _ in range(n)]
        weight_sum = memory.new_zeros(n, memory.shape[1], dtype=torch.float32) if attention else None
        alive = torch.arange(n, device=device)
        if cross_kv is None:
            cross_kv = self.cross_keys_values(memory)
        caches = self.new_caches(memory)
        token = torch.full((n, 1), start_id, dtype=torch.long, device=device)
        for step in range(self.max_len):
            logits = self.step(token, step, caches, cross_kv, attention)
            if attention:
                logits, weights = logits
                weight_sum.index_add_(0, alive, weights[:, -1])
            next_ids = logits.argmax(dim=-1)
            for row, tok in zip(alive.tolist(), next_ids.tolist()):
                outputs[row].append(tok)
            keep = next_ids != end_id
            if not bool(keep.all()):
                if not bool(keep.any()):
                    break
                idx = keep.nonzero().squeeze(1)
                alive, next_ids = alive[idx], next_ids[idx]
                caches = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in caches]
                cross_kv = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in cross_kv]
            token = next_ids.unsqueeze(1)
        if attention:
            steps = torch.tensor([len(ids) - 1 for ids in outputs], dtype=torch.float32, device=device)
            return outputs, weight_sum / steps.unsqueeze(1)
        return outputs
