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


class NoChangeScorer:
    """change_score for batches of pairs; the sentences' text side is computed once."""

    def __init__(self, sentences, pad_id):
        self.sentences = sentences
        self.pad_id = pad_id
        self._text = None  # (ids, lengths, uni-decoder states): they do not depend on the pair

    def _text_side(self, decoder, device):
        if self._text is None:
            longest = max(len(s) for s in self.sentences)
            ids = torch.full((len(self.sentences), longest), self.pad_id, dtype=torch.long, device=device)
            for i, s in enumerate(self.sentences):
                ids[i, :len(s)] = torch.tensor(s, device=device)
            lengths = torch.tensor([len(s) - 1 for s in self.sentences], device=device)
            self._text = (ids, lengths, decoder.text_states(ids))
        return self._text

    def __call__(self, decoder, cross_kv):
        """Scores (N,) from the visual keys/values of N pairs (decoder.cross_keys_values)."""
        n, k = cross_kv[0][0].shape[0], len(self.sentences)
        ids, lengths, text = self._text_side(decoder, cross_kv[0][0].device)
        paired = [(kk.repeat_interleave(k, 0), vv.repeat_interleave(k, 0)) for kk, vv in cross_kv]
        logits = decoder.cross_logits(text.repeat(n, 1, 1), paired)[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].repeat(n, 1).unsqueeze(-1))[..., 0]
        valid = torch.arange(ids.shape[1] - 1, device=ids.device) < lengths.unsqueeze(1)
        mean_logp = (logp * valid.repeat(n, 1)).sum(-1) / lengths.repeat(n)
        return (1.0 - mean_logp.view(n, k).exp().max(dim=1).values).clamp_(0.0, 1.0)
