"""The official RSICRC training objective (src/train.py, src/Loss.py of the RSICRC repository).

loss = caption cross-entropy + lamb x InfoNCE(pair embedding, caption embedding). The caption
loss is teacher-forced, averaged over every target token but the padding; the caption embedding
is the uni-decoder's state at the caption's last token (END), the one text search reads
(`Captioner.embed_token_ids`). The InfoNCE is Loss.InfoNCELoss with the training script's
settings: cosine similarities over `TEMPERATURE`; a positive for every pair of rows with the
same retrieval label (one label for every no-change pair, the image id otherwise) and every
row with itself; false negatives eliminated and added as positives (config "fna": true):
rows whose captions are the same sentence. Each positive (a, p) costs
-log(e^s(a,p) / (e^s(a,p) + sum over a's negatives n of e^s(a,n))); the loss is their mean, and
0 for a batch without any negative, as the official code.
"""
import torch
import torch.nn.functional as F

TEMPERATURE = 0.01  # train.py --temperature
LAMB = 0.5          # train.py --lamb
IGNORED = -100      # the label of a padding position (torch's default ignore_index)


def caption_loss_and_embedding(decoder, memory, ids, lengths):
    """Teacher-forced caption cross-entropy and the caption embeddings (B, d), not normalised.

    ids (B, L): START, the caption's ids, END, then padding; lengths (B,): ids before the padding.
    Causal attention makes every position before the padding independent of it, so no padding
    mask is needed: the official key-padding mask changes only the padded positions' outputs,
    which no loss reads."""
    states = decoder.text_states(ids)
    rows = torch.arange(ids.shape[0], device=ids.device)
    text = states[rows, lengths - 1]
    logits = decoder.cross_logits(states, decoder.cross_keys_values(memory))
    padded = torch.arange(ids.shape[1], device=ids.device)[None] >= lengths[:, None]
    labels = ids.masked_fill(padded, IGNORED)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORED)
    return loss, text


def info_nce(pair_embeddings, caption_embeddings, labels, sentences, temperature=TEMPERATURE):
    """The official InfoNCE. labels (B,): retrieval labels; sentences (B,): equal for rows whose
    captions are the same sentence."""
    sim = F.normalize(pair_embeddings.float(), dim=-1) @ F.normalize(caption_embeddings.float(), dim=-1).T
    logits = sim / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    same_sentence = sentences[:, None] == sentences[None]
    positives = (labels[:, None] == labels[None]) | same_sentence | eye
    negatives = ~positives
    if not bool(negatives.any()):
        return logits.new_zeros(())
    # The lowest finite number, not -inf, marks a non-negative (as the official code): a row
    # without any negative would give logsumexp a gradient of exp(-inf + inf) = NaN.
    negative_mass = torch.logsumexp(logits.masked_fill(~negatives, torch.finfo(logits.dtype).min), dim=1,
                                    keepdim=True)
    per_positive = torch.logaddexp(logits, negative_mass.expand_as(logits)) - logits
    return per_positive[positives].mean()


def objective(net, memory, pooled, ids, lengths, labels, sentences, lamb=LAMB, temperature=TEMPERATURE):
    """-> (loss, caption loss, contrastive loss), the last two detached."""
    cap_loss, text = caption_loss_and_embedding(net.decoder, memory, ids, lengths)
    con_loss = info_nce(pooled, text, labels, sentences, temperature)
    return cap_loss + lamb * con_loss, cap_loss.detach(), con_loss.detach()
