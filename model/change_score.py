"""Whether a caption says "no change", and how sure the model is that nothing changed.

change_score (in [0, 1]) = 1 - max over the LEVIR-CC "no change" sentences s of
P(s | pair) ** (1 / len(s)): the decoder's per-token geometric-mean probability of the most
likely "no change" sentence (teacher-forced, END included), for this pair. A pair the model
would describe with one of those sentences with confident tokens scores near 0; a pair for
which every such sentence is unlikely scores near 1. The score needs no threshold from
training data and is comparable across tiles of one model.
"""
import re

import torch

# The "no change" sentences of LEVIR-CC (the caption styles the released model produces for
# unchanged pairs), most frequent first.
NO_CHANGE_SENTENCES = (
    "the scene is the same as before",
    "there is no difference",
    "the two scenes seem identical",
    "no change has occurred",
    "nothing has changed",
    "almost nothing has changed",
    "there is no change",
)
_NO_CHANGE_PATTERNS = re.compile(
    r"\b(no (change|changes|difference)|nothing (has )?changed|same as before|"
    r"seem(s)? (to be )?identical|remain(s)? (the )?same|unchanged)\b")


def is_no_change(caption):
    text = " ".join(caption.lower().split())
    return text in NO_CHANGE_SENTENCES or bool(_NO_CHANGE_PATTERNS.search(text))


def sentence_token_ids(vocab):
    """Token ids of the "no change" sentences whose every word the vocabulary knows."""
    out = []
    for sentence in NO_CHANGE_SENTENCES:
        tok = vocab.tokenize(sentence)
        if not tok.unknown:
            out.append(tok.ids)
    return out


def prefix_trie(sentences):
    """The distinct prefixes whose next token is scored: one node per prefix, shared by the
    sentences that start alike (all share START). The state at a position depends only on its
    prefix (causal attention, position = depth), so each node needs computing once per pair.

    Returns a dict of lists: rows (per node, the (sentence, position) of one occurrence),
    ancestors (per node, the nodes of its prefixes, itself included), and per scored token
    (END included) its node, target id and owner sentence.
    """
    index, rows, ancestors = {}, [], []
    nodes, targets, owners = [], [], []
    for i, s in enumerate(sentences):
        path = []
        for t in range(len(s) - 1):
            prefix = tuple(s[:t + 1])
            if prefix not in index:
                index[prefix] = len(rows)
                rows.append((i, t))
                ancestors.append(path + [index[prefix]])
            path = ancestors[index[prefix]]
            nodes.append(index[prefix])
            targets.append(s[t + 1])
            owners.append(i)
    return {"rows": rows, "ancestors": ancestors, "nodes": nodes, "targets": targets, "owners": owners}


class NoChangeScorer:
    """change_score for batches of pairs.

    Everything up to the first cross layer's cross-attention query reads only the sentences'
    tokens, so it is computed once (per decoder dtype and device). Per pair, only the distinct
    prefixes of the sentences go through the rest, in one batch of (pairs x prefixes) rows:
    later layers' self-attention sees each prefix's own ancestors through a mask, which is the
    causal attention of every sentence holding that prefix.
    """

    def __init__(self, sentences, pad_id):
        self.sentences = sentences
        self.pad_id = pad_id
        self._trie = prefix_trie(sentences)
        self._text = None  # (key, tensors): the pair-independent side, for one dtype and device

    def _text_side(self, decoder):
        weight = decoder.lm_head.weight
        key = (weight.dtype, weight.device)
        if self._text is None or self._text[0] != key:
            self._text = (key, self._build_text_side(decoder, weight.device))
        return self._text[1]

    def _build_text_side(self, decoder, device):
        longest = max(len(s) for s in self.sentences)
        ids = torch.full((len(self.sentences), longest), self.pad_id, dtype=torch.long, device=device)
        for i, s in enumerate(self.sentences):
            ids[i, :len(s)] = torch.tensor(s, device=device)
        first = decoder.cross_decoder[0]
        # Causal: the padding after END reaches no scored position.
        states = first.self_block(decoder.text_states(ids))
        sentence, position = (torch.tensor(c, device=device) for c in zip(*self._trie["rows"]))
        states = states[sentence, position].unsqueeze(0)  # (1, nodes, d)
        count = len(self._trie["rows"])
        ancestors = torch.zeros(count, count, dtype=torch.bool, device=device)
        for node, path in enumerate(self._trie["ancestors"]):
            ancestors[node, path] = True
        owners = torch.tensor(self._trie["owners"], device=device)
        return {
            "states": states,
            "query": first.cross_query(states),
            "ancestors": ancestors,
            "nodes": torch.tensor(self._trie["nodes"], device=device),
            "targets": torch.tensor(self._trie["targets"], device=device),
            "owners": owners,
            "lengths": torch.bincount(owners, minlength=len(self.sentences)).float(),
        }

    @torch.inference_mode()
    def mean_log_probs(self, decoder, cross_kv):
        """(N, sentences) float32: each sentence's mean teacher-forced token log-probability."""
        text = self._text_side(decoder)
        n = cross_kv[0][0].shape[0]
        first, *later = decoder.cross_decoder
        query = text["query"].expand(n, -1, -1, -1)
        x = first.ff_block(first.cross_block(text["states"], cross_kv[0], query=query))
        for layer, kv in zip(later, cross_kv[1:]):
            x = layer(x, cross_kv=kv, mask=text["ancestors"])
        logits = decoder.lm_head(x).float()  # (N, nodes, V)
        nodes = text["nodes"]
        token_logp = logits[:, nodes, text["targets"]] - logits.logsumexp(dim=-1)[:, nodes]
        sums = token_logp.new_zeros(n, len(self.sentences)).index_add_(1, text["owners"], token_logp)
        return sums / text["lengths"]

    def __call__(self, decoder, cross_kv):
        """Scores (N,) from the visual keys/values of N pairs (decoder.cross_keys_values)."""
        best = self.mean_log_probs(decoder, cross_kv).exp().max(dim=1).values
        return (1.0 - best).clamp_(0.0, 1.0)
