"""Captioning metrics as the official RSICRC evaluation computes them, with pycocoevalcap's scorers.

The official `src/eval.py` scores the greedy captions with its own copies of the COCO caption
scorers (`eval_func`: BLEU-1..4 with the "closest" reference length, ROUGE-L with beta 1.2,
CIDEr with n 4 and sigma 6), fed as they are: the hypothesis is the caption and the references
are the pair's `raw` sentences untouched (leading space and trailing " ." kept, no PTB
tokenisation). Those copies differ from pycocoevalcap 1.2 in one place: for a single pair the
copy sets CIDEr's log reference length to 1 instead of log(1) = 0 (which would zero every
n-gram weight); `_SinglePairCiderScorer` keeps that. METEOR is not in the official table; it is
added when a Java runtime can run pycocoevalcap's bundled jar, and reported absent otherwise.
"""
import shutil

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.rouge.rouge import Rouge

OFFICIAL_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")


class _SinglePairCiderScorer(CiderScorer):
    """pycocoevalcap's CiderScorer with the official copy's ref_len of 1 for a one-pair corpus."""

    @property
    def ref_len(self):
        return self._ref_len

    @ref_len.setter
    def ref_len(self, value):
        self._ref_len = 1.0 if value is not None and len(getattr(self, "crefs", ())) == 1 else value


def _inputs(references, hypotheses):
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("no captions to score")
    if any(not refs for refs in references):
        raise ValueError("every caption needs at least one reference")
    # Keys in pair order: the scorers iterate them as the official loop iterates its lists.
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    return gts, res


def official_scores(references, hypotheses):
    """{"Bleu_1".."Bleu_4", "ROUGE_L", "CIDEr"} for hypotheses[i] against references[i] (lists of str)."""
    gts, res = _inputs(references, hypotheses)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)  # verbose would print to stdout
    rouge, _ = Rouge().compute_score(gts, res)
    cider = _SinglePairCiderScorer(n=4, sigma=6.0)
    for i in gts:
        cider += (res[i][0], gts[i])
    cider_score, _ = cider.compute_score()
    scores = dict(zip(OFFICIAL_METRICS[:4], bleu))
    scores.update(ROUGE_L=rouge, CIDEr=cider_score)
    return {k: float(v) for k, v in scores.items()}


def meteor_scores(corpora):
    """METEOR of each (references, hypotheses) corpus with pycocoevalcap's jar, started once.

    Returns ([score, ...], None), or (None, why it could not be computed)."""
    inputs = [_inputs(refs, hyps) for refs, hyps in corpora]
    if shutil.which("java") is None:
        return None, "no Java runtime (java is not on PATH); pycocoevalcap's METEOR jar needs one"
    from pycocoevalcap.meteor.meteor import Meteor

    # The jar reads one line per request, with ||| between fields.
    def one_line(text):
        return " ".join(text.replace("|||", " ").split())

    try:
        meteor = Meteor()
    except OSError as exc:
        return None, f"java could not be started ({exc})"
    try:
        scores = []
        for gts, res in inputs:
            gts = {i: [one_line(r) for r in refs] for i, refs in gts.items()}
            res = {i: [one_line(h[0])] for i, h in res.items()}
            scores.append(float(meteor.compute_score(gts, res)[0]))
        return scores, None
    except (OSError, ValueError) as exc:  # the jar died (memory?) or answered nonsense
        return None, f"the METEOR jar failed ({type(exc).__name__}: {exc}; stderr: {_stderr_tail(meteor)})"
    finally:
        _close(meteor)


def _stderr_tail(meteor):
    try:
        meteor.meteor_p.kill()
        return meteor.meteor_p.stderr.read().decode("utf-8", "replace").strip()[-300:] or "empty"
    except Exception:  # the reason is a courtesy; the failure is already reported
        return "unavailable"


def _close(meteor):
    # Meteor.__del__ takes its lock before stopping java; a failed compute_score leaves it held,
    # and __del__ would then wait forever at exit.
    if meteor.lock.locked():
        meteor.lock.release()
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()
    for stream in (meteor.meteor_p.stdin, meteor.meteor_p.stdout, meteor.meteor_p.stderr):
        try:
            stream.close()
        except OSError:
            pass
