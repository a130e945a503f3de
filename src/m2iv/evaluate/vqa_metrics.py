"""Short-answer metrics ported line by line from the official VQA and GQA evaluation code: VQA accuracy,
exact match after the VQA answer normalization, and GQA accuracy. Scores are fractions in [0, 1].
tests/data/metric_reference.json pins the ports to the official implementations.
"""

from __future__ import annotations

import re

from m2iv.evaluate.metric_registry import register_metric

# ---- VQA: GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py @ a013f00 (2021) -----------------------
# The table below is the official one verbatim, including its quirks ("somebody'd" -> "somebodyd"; capitalised keys
# that can never match because words are lower-cased first).
_CONTRACTIONS = dict(item.split(":") for item in (  # noqa: SIM905 (one "key:value" per official entry)
    "aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've "
    "couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've "
    "hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's "
    "Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll "
    "let's:let's maam:ma'am mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've "
    "mustnt:mustn't mustve:must've neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at "
    "'ows'at:'ow's'at 'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've "
    "shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd "
    "somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's "
    "someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll someones:someone's "
    "somethingd:something'd somethingd've:something'd've something'dve:something'd've somethingll:something'll "
    "thats:that's thered:there'd thered've:there'd've there'dve:there'd've therere:there're theres:there's "
    "theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas "
    "wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll whatre:what're whats:what's "
    "whatve:what've whens:when's whered:where'd wheres:where's whereve:where've whod:who'd whod've:who'd've "
    "who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll whyre:why're whys:why's wont:won't "
    "wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll "
    "y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've "
    "you'dve:you'd've youll:you'll youre:you're youve:you've").split())
_MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
               "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = ("a", "an", "the")
# "(?!<=\d)" is the official (mistyped) look-behind: it is a look-ahead that never fires, so every "." that is not
# followed by a digit is removed. Kept as is.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: a mark touching a space (or any text with a digit,digit comma) is deleted,
    otherwise it becomes a space."""
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call passes re.UNICODE positionally, i.e. as count=32: only the first 32 periods are removed.
    return _PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lower-case, number words -> digits, drop articles, restore contractions."""
    words = [_MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """The full official answer normalization (whitespace, punctuation, digits, articles, contractions)."""
    return process_digit_article(process_punctuation(_clean(text)))


@register_metric("vqa_accuracy")
def vqa_accuracy(prediction: str, references: list[str]) -> float:
    """Official VQA accuracy: mean over the leave-one-out subsets of min(#matches among the others / 3, 1).

    Exactly as vqaEval.evaluate: both sides are stripped; punctuation/digit/article normalization is applied to the
    prediction and the answers only when the human answers are not all identical (so "Yes" scores 0 against ten
    "yes"; normalize predictions beforehand, as submission pipelines do, if that is not wanted). With n answers the
    leave-one-out runs over n subsets of n-1, as the official loop does for any n. With a single answer the official
    formula always gives 0, so we score exact match after full normalization instead.
    """
    if len(references) == 1:
        return exact_match(prediction, references)
    answers = [_clean(a) for a in references]
    pred = _clean(prediction)
    if len(set(answers)) > 1:
        answers = [process_digit_article(process_punctuation(a)) for a in answers]
        pred = process_digit_article(process_punctuation(pred))
    total = sum(a == pred for a in answers)
    accs = [min(1, float(total - (a == pred)) / 3) for a in answers]
    return float(sum(accs)) / len(accs)


@register_metric("exact_match")
def exact_match(prediction: str, references: list[str]) -> float:
    """1.0 if the prediction equals any reference after the full VQA normalization of both sides."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in references))


@register_metric("gqa_accuracy")
def gqa_accuracy(prediction: str, references: list[str]) -> float:
    """GQA accuracy: the official eval.py scores `predicted == gold` on raw strings (its golds are clean lower-case
    words). Free-form generations are first cleaned the way LLaVA's convert_gqa_for_eval.py does before calling it
    (strip a trailing ".", lower-case), plus surrounding whitespace; nothing else is normalized."""
    pred = prediction.strip().rstrip(".").strip().lower()
    return float(any(pred == r.strip().lower() for r in references))



__all__ = ["exact_match", "gqa_accuracy", "normalize_answer", "process_digit_article", "process_punctuation",
           "vqa_accuracy"]
