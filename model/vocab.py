"""The LEVIR-CC vocabulary and the free-text tokenizer built on it."""
import re
from dataclasses import dataclass

SPECIALS = ("PAD", "START", "UNK", "END")
# LEVIR-CC captions are lower-case words; punctuation and digits carry no tokens there. Letters
# of any script make words, so that a query in another language is reported as unknown words
# rather than split into fragments.
_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")


@dataclass(frozen=True)
class Tokenized:
    ids: list          # START + word ids + END
    words: list        # the words found in the text, in order
    unknown: list      # the words that fell outside the vocabulary (mapped to UNK)


class Vocabulary:
    def __init__(self, word_to_id):
        missing = [s for s in SPECIALS if s not in word_to_id]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}")
        ids = sorted(word_to_id.values())
        if ids != list(range(len(ids))):
            raise ValueError("vocabulary ids must be 0..N-1, each used once")
        self.word_to_id = dict(word_to_id)
        self.id_to_word = {i: w for w, i in word_to_id.items()}
        self.pad, self.start, self.unk, self.end = (word_to_id[s] for s in SPECIALS)

    def __len__(self):
        return len(self.word_to_id)

    def __contains__(self, word):
        return word in self.word_to_id and word not in SPECIALS

    @staticmethod
    def split_words(text):
        return _WORD.findall(text.lower())

    def tokenize(self, text):
        words = self.split_words(text)
        ids = [self.word_to_id.get(w, self.unk) if w not in SPECIALS else self.unk for w in words]
        unknown = [w for w, i in zip(words, ids) if i == self.unk]
        return Tokenized([self.start, *ids, self.end], words, unknown)

    def decode(self, ids):
        """Caption words of greedy ids: between START and END.

        A sequence cut at the length limit has no END; the official code then drops its last
        token as if it were END, and captions must match the official ones word for word.
        """
        ids = list(ids)
        if ids and ids[0] == self.start:
            ids = ids[1:]
        ids = ids[:ids.index(self.end)] if self.end in ids else ids[:-1]
        return " ".join(self.id_to_word.get(i, "UNK") for i in ids)
