"""Caption metrics ported from pycocoevalcap 1.2: its PTB tokenization (in pure Python, no Java), CIDEr-D and
BLEU-4. Both are corpus metrics (document frequencies and the brevity penalty are pooled over the set); CIDEr-D
keeps pycocoevalcap's raw scale (0.85 is reported as "CIDEr 85.0"). tests/data/metric_reference.json pins the
ports to the official implementations.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

from m2iv.evaluate.metric_registry import check_inputs, register_metric

# ---- Captions: pycocoevalcap 1.2 (PTBTokenizer -> CiderScorer / BleuScorer) --------------------------------------
# Tokens pycocoevalcap removes after PTB tokenization. Matching is case-sensitive, so the lower-cased "-lrb-" etc. that
# PTBTokenizer -lowerCase emits for brackets are *kept*, exactly as in the official pipeline.
_PTB_PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                               "--", "...", ";"])
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"],
                "gimme": ["gim", "me"], "lemme": ["lem", "me"]}
_CLITIC = re.compile(r"(.+?)(n't|'s|'m|'re|'ve|'ll|'d)")
_CLITIC_WORDS = frozenset({"'s", "'m", "'re", "'ve", "'ll", "'d"})
_ACRONYM = re.compile(r"[a-z](?:\.[a-z])*")  # a  u.s  p.m  e.g: initials and acronyms keep their final "."
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "inc", "co", "corp", "ltd", "prof",
                            "gen", "sgt", "capt", "col", "lt", "mt", "ft", "ave", "rd", "blvd", "jan", "feb", "aug",
                            "sept", "oct", "nov", "dec"})


def _keeps_period(word: str) -> bool:
    return bool(_ACRONYM.fullmatch(word)) or word in _ABBREVIATIONS


def _ellipsis(m: re.Match) -> str:
    """PTB splits "...", but "st...." / "u.s...." keep the abbreviation's own period: "st. ..."."""
    last = re.search(r"\S*$", m.string[: m.start()])
    before = last.group().lstrip("'`([{\"") if last else ""
    return ". ... " if before and _keeps_period(before) else " ... "


_Repl = str | Callable[[re.Match[str]], str]
_RAW_SUBS: list[tuple[str, _Repl]] = [
    (r"[()\[\]{}]", lambda m: f" {_BRACKETS[m.group()]} "), (r'["“”]', " '' "), (r"\.{3,}", _ellipsis),
    (r"-{2,}", " -- "), (r"(?<!\d),|,(?!\d)", " , "), (r"(?<!\d):|:(?!\d)", " : "), (r";", " ; "),
    (r"([$#%])", r" \1 ")]
_PTB_SUBS = [(re.compile(p), r) for p, r in _RAW_SUBS]


def _ptb_word(word: str) -> list[str]:
    head: list[str] = []
    tail: list[str] = []
    while len(word) > 1 and word[0] in "'`" and word not in _CLITIC_WORDS:
        head.append(word[0])
        word = word[1:]
    while len(word) > 1:
        run = re.search(r"[!?]+$", word)
        if run and run.start() > 0:
            tail.insert(0, run.group())
            word = word[: run.start()]
        elif word[-1] in "'`":
            tail.insert(0, word[-1])
            word = word[:-1]
        elif word[-1] == "." and not _keeps_period(word[:-1]):
            tail.insert(0, ".")
            word = word[:-1]
        else:
            break
    if word in _SPLIT_WORDS:
        return head + _SPLIT_WORDS[word] + tail
    m = _CLITIC.fullmatch(word)
    return head + ([m.group(1), m.group(2)] if m else [word]) + tail


def ptb_tokenize(text: str) -> str:
    """A pure-Python stand-in for pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1, -lowerCase) followed by its
    punctuation filter, so no Java is needed. It reproduces the common caption cases (clitics "do n't", "dog 's";
    brackets -> "-lrb-"; quotes, commas, periods, "...", "--" removed; hyphenated words, "u.s.", "3.5", "1,000",
    "10:30" kept whole) and is idempotent; rare constructs ("'tis", "rock'n'roll", 5'10", "y'all", "w/") differ."""
    s = text.replace("\n", " ").lower().replace("‘", "`").replace("’", "'")
    for pattern, repl in _PTB_SUBS:
        s = pattern.sub(repl, s)
    tokens = [t for w in s.split() for t in _ptb_word(w)]
    return " ".join(t for t in tokens if t not in _PTB_PUNCTUATIONS)


def _ngrams(words: list[str], n: int = 4) -> Counter[tuple[str, ...]]:
    """pycocoevalcap precook: counts of all 1..n-grams, in its insertion order (k-major)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


@register_metric("cider_d", corpus=True)
def cider_d_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4,
                   sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D as pycocoevalcap's CiderScorer: tf-idf n-gram cosine with the document frequencies of *this* set's
    references, candidate weights clipped by the reference's, a Gaussian length penalty, averaged over n=1..4 and
    references, times 10. Returns (corpus mean, per-image scores)."""
    check_inputs("cider_d", predictions, references)
    tests = [_ngrams(ptb_tokenize(p).split(), n) for p in predictions]
    refs = [[_ngrams(ptb_tokenize(r).split(), n) for r in rs] for rs in references]
    doc_freq: Counter[tuple[str, ...]] = Counter(g for rs in refs for g in {g for r in rs for g in r})
    log_n_images = math.log(float(len(refs)))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        v: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            v[k][gram] = float(tf) * (log_n_images - math.log(max(1.0, doc_freq[gram])))
            norm[k] += pow(v[k][gram], 2)
            if k == 1:  # sic: pycocoevalcap counts *bigrams* as the "length" used by the penalty
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    per_image = []
    for test, rs in zip(tests, refs, strict=True):
        v_hyp, norm_hyp, len_hyp = vec(test)
        total = [0.0] * n
        for r in rs:
            v_ref, norm_ref, len_ref = vec(r)
            delta = float(len_hyp - len_ref)
            for k in range(n):
                val = 0.0
                for gram, w in v_hyp[k].items():
                    val += min(w, v_ref[k].get(gram, 0.0)) * v_ref[k].get(gram, 0.0)
                if norm_hyp[k] != 0 and norm_ref[k] != 0:
                    val /= norm_hyp[k] * norm_ref[k]
                total[k] += val * math.e ** (-(delta ** 2) / (2 * sigma ** 2))
        per_image.append(sum(total) / n / len(rs) * 10.0)
    return sum(per_image) / len(per_image), per_image


def cider_d(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    return cider_d_scores(predictions, references)[0]


@register_metric("bleu4", corpus=True)
def bleu4_scores(predictions: Sequence[str], references: Sequence[Sequence[str]],
                 n: int = 4) -> tuple[float, list[float]]:
    """BLEU-n as pycocoevalcap's BleuScorer with option "closest" (brevity penalty against the reference length
    closest to each candidate, ties to the shorter). Returns (corpus BLEU, per-image sentence BLEU)."""
    check_inputs("bleu4", predictions, references)
    totals = [0] * (2 + 2 * n)  # testlen, reflen, guess[n], correct[n]: pooled over the corpus
    per_image = []
    for p, rs in zip(predictions, references, strict=True):
        words = ptb_tokenize(p).split()
        ref_words = [ptb_tokenize(r).split() for r in rs]
        max_counts: dict[tuple[str, ...], int] = {}
        for rw in ref_words:
            for gram, c in _ngrams(rw, n).items():
                max_counts[gram] = max(max_counts.get(gram, 0), c)
        correct = [0] * n
        for gram, c in _ngrams(words, n).items():
            correct[len(gram) - 1] += min(max_counts.get(gram, 0), c)
        reflen = min((abs(len(rw) - len(words)), len(rw)) for rw in ref_words)[1]
        stats = [len(words), reflen, *[max(0, len(words) - k) for k in range(n)], *correct]
        per_image.append(_bleu(stats, n))
        totals = [t + x for t, x in zip(totals, stats, strict=True)]
    return _bleu(totals, n), per_image


def _bleu(stats: list[int], n: int, small: float = 1e-9, tiny: float = 1e-15) -> float:
    testlen, reflen, guess, correct = stats[0], stats[1], stats[2:2 + n], stats[2 + n:]
    bleu = 1.0
    for k in range(n):
        bleu *= (float(correct[k]) + tiny) / (float(guess[k]) + small)
    bleu = bleu ** (1.0 / n)
    ratio = (testlen + tiny) / (reflen + small)
    return bleu * math.exp(1 - 1 / ratio) if ratio < 1 else bleu


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    return bleu4_scores(predictions, references)[0]



__all__ = ["bleu4", "bleu4_scores", "cider_d", "cider_d_scores", "ptb_tokenize"]
