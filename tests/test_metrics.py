"""Tests for minis2s/metrics.py: ROUGE-1/2/L F1 and exact match.

Covers: the hand-checked worked examples of the docstrings, edge cases (empty strings, punctuation only,
repeated words), and bit-for-bit agreement with Google's `rouge-score` package (the reference, a test
dependency: `RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)`) on random texts that mix
case, digits, punctuation and non-ASCII letters. 4 s on an idle 2-core machine (14 s on a busy one),
most of it importing torch (conftest) and rouge-score (nltk).

    python -m pytest tests/test_metrics.py -q
"""

import random
from fractions import Fraction

import pytest

from conftest import require
from minis2s.metrics import exact_match, f1, lcs_length, ngrams, rouge_l, rouge_n, rouge_scores, words


def test_words_are_lowercase_alphanumeric_runs():
    assert words("Get_terminal-size()!") == ["get", "terminal", "size"]
    assert words("  x2 = Y3;\n") == ["x2", "y3"]
    assert words("café") == ["caf"]  # as rouge-score: only [a-z0-9] survive


def test_ngrams():
    assert ngrams(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert ngrams(["a"], 2) == {}


@pytest.mark.parametrize("prediction, reference, n, expected", [
    ("the cat sat", "the cat was sat", 1, Fraction(6, 7)),   # overlap 3, P 3/3, R 3/4
    ("the cat sat", "the cat was sat", 2, Fraction(2, 5)),   # overlap 1 (the cat), P 1/2, R 1/3
    ("get size", "get terminal size", 1, Fraction(4, 5)),    # P 1, R 2/3
    ("get size", "get terminal size", 2, 0),
    ("a a a", "a", 1, Fraction(1, 2)),                        # clipped: overlap min(3, 1) = 1, P 1/3, R 1
    ("Get-Terminal SIZE", "get terminal size", 2, 1),
])
def test_rouge_n_worked_examples(prediction, reference, n, expected):
    assert rouge_n(prediction, reference, n) == pytest.approx(float(expected), abs=1e-15)


@pytest.mark.parametrize("prediction, reference, lcs, expected", [
    ("the cat sat", "the cat was sat", 3, Fraction(6, 7)),
    ("sat the cat", "the cat was sat", 2, Fraction(4, 7)),    # "the cat": P 2/3, R 2/4
    ("b a", "a b", 1, Fraction(1, 2)),
    ("close", "open", 0, 0),
])
def test_rouge_l_worked_examples(prediction, reference, lcs, expected):
    assert lcs_length(words(prediction), words(reference)) == lcs
    assert rouge_l(prediction, reference) == pytest.approx(float(expected), abs=1e-15)


def test_f1_docstring_example():
    assert f1(2, 3, 4) == pytest.approx(4 / 7, abs=1e-15)
    assert f1(0, 0, 0) == 0.0


@pytest.mark.parametrize("prediction, reference", [("", ""), ("", "close"), ("close", ""), ("...", "!!"), ("x", "...")])
def test_empty_sides_score_zero(prediction, reference):
    for score in (rouge_n(prediction, reference, 1), rouge_n(prediction, reference, 2), rouge_l(prediction, reference)):
        assert score == 0.0


def test_exact_match_ignores_case_and_punctuation():
    assert exact_match("Get terminal size", "get_terminal_size") == 1.0
    assert exact_match("get terminal", "get terminal size") == 0.0
    assert exact_match("", "") == 1.0 and exact_match("", "x") == 0.0


def test_rouge_scores_docstring_example_and_errors():
    assert rouge_scores(["get size", "open"], ["get terminal size", "close"]) == pytest.approx(
        {"rouge1": 0.4, "rouge2": 0.0, "rougeL": 0.4, "exact_match": 0.0}, abs=1e-15)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        rouge_scores([], [])


# Words that exercise the tokeniser: case, digits, punctuation glued to words, and non-ASCII letters that
# lower-case to several code points (İ), ligatures (ﬁ), full-width letters, other scripts.
VOCAB = ["a", "b", "the", "Cat", "cat.", "x1", "get_size", "--", "(y)",
         "café", "İstanbul", "ﬁle", "ＡＢ", "ß", "три", "٣"]


def test_bit_for_bit_agreement_with_rouge_score():
    rouge_scorer = require("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rng = random.Random(0)
    checked = 0
    for _ in range(3000):
        prediction = " ".join(rng.choices(VOCAB, k=rng.randint(0, 8)))
        reference = " ".join(rng.choices(VOCAB, k=rng.randint(0, 8)))
        ref = scorer.score(reference, prediction)  # rouge-score's order is (target, prediction)
        ours = {"rouge1": rouge_n(prediction, reference, 1), "rouge2": rouge_n(prediction, reference, 2),
                "rougeL": rouge_l(prediction, reference)}
        for name, value in ours.items():
            assert value == ref[name].fmeasure, (name, prediction, reference, value, ref[name].fmeasure)
            checked += value > 0
    assert checked > 1000  # the random texts do overlap: most comparisons are not 0 == 0
