"""The training captions of a LEVIR-CC split: token ids, retrieval labels and sentence keys.

As the official CCDataset: every sentence of every pair is one sample; its `tokens` become ids
(START, words, END) with the model's vocabulary, a word outside it becoming UNK; a sentence of
more than max_len - 2 words is left out. Both are counted and reported, never silent. A
sample's retrieval label is the pair's (one for every no-change pair, the image id otherwise);
its sentence key is equal for equal sentences (the false negatives of the contrastive loss).
"""
from collections import Counter
from dataclasses import dataclass

from ..errors import BadInput


@dataclass(frozen=True)
class Sample:
    pair: int        # index of the pair in the split
    ids: tuple       # START, word ids, END
    label: int       # retrieval label
    sentence: int    # equal for equal sentences


@dataclass
class SplitCaptions:
    samples: list
    unknown_words: Counter   # words outside the vocabulary (each became UNK), with their counts
    too_long: int            # sentences left out for having more than max_len - 2 words
    sentences: int           # sentences read

    def summary(self, split):
        parts = [f"{split}: {len(self.samples)} captions of {self.sentences}"]
        if self.too_long:
            parts.append(f"{self.too_long} left out for more words than the model writes")
        if self.unknown_words:
            common = ", ".join(f"{w} ({n})" for w, n in self.unknown_words.most_common(8))
            parts.append(f"{sum(self.unknown_words.values())} words outside the vocabulary became UNK "
                         f"({len(self.unknown_words)} distinct: {common})")
        return "; ".join(parts)


def split_captions(pairs, vocab, max_len, split, annotations):
    """SplitCaptions of `pairs` (levir_cc.LevirPair); BadInput when no caption can be learnt."""
    keys, samples, unknown, too_long, read = {}, [], Counter(), 0, 0
    for index, pair in enumerate(pairs):
        for tokens in pair.sentence_tokens:
            read += 1
            words = list(tokens)
            if len(words) > max_len - 2:
                too_long += 1
                continue
            ids = [vocab.word_to_id[w] if w in vocab else vocab.unk for w in words]
            unknown.update(w for w, i in zip(words, ids) if i == vocab.unk)
            key = keys.setdefault(tuple(words), len(keys))
            samples.append(Sample(index, (vocab.start, *ids, vocab.end), pair.flag, key))
    if not samples:
        raise BadInput(f"split {split!r} has no caption of at most {max_len - 2} words to learn", annotations)
    if all(i == vocab.unk for s in samples for i in s.ids[1:-1]):
        raise BadInput(f"split {split!r}: every word of every caption is outside the model's vocabulary "
                       f"(e.g. {', '.join(w for w, _ in unknown.most_common(5))}); the captions must be in the "
                       f"model's language, lower-case words as LEVIR-CC's", annotations)
    return SplitCaptions(samples, unknown, too_long, read)
