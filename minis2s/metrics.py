"""ROUGE-1, ROUGE-2, ROUGE-L F1 and exact match (Lin 2004), bit for bit those of Google's `rouge-score`.

    ROUGE-N:  overlap = sum over n-grams g of min(count_pred(g), count_ref(g))
              P = overlap / #n-grams(pred),  R = overlap / #n-grams(ref)
    ROUGE-L:  P = LCS(pred, ref) / len(pred),  R = LCS(pred, ref) / len(ref)   (longest common subsequence)
    F1 = 2 P R / (P + R), and 0 when P + R = 0.

Words are the runs of [a-z0-9] in the lower-cased text, no stemming: rouge-score's tokeniser with use_stemmer=False
(tests/test_metrics.py checks the agreement). A side with no n-grams scores 0. Corpus scores are means in [0, 1];
papers print x100. More in docs/training.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words.  "Get_terminal-size()!" -> ["get", "terminal", "size"]"""
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of n-grams.  (["a", "b", "a", "b"], 2) -> {("a", "b"): 2, ("b", "a"): 1}"""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def f1(overlap: int, n_pred: int, n_ref: int) -> float:
    """F1 from an overlap count.  (2, 3, 4) -> P = 2/3, R = 2/4, F1 = 2PR / (P + R) = 4/7"""
    precision = overlap / max(n_pred, 1)  # max(., 1): an empty side has P = R = 0, not 0 / 0
    recall = overlap / max(n_ref, 1)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def rouge_n(prediction: str, reference: str, n: int) -> float:
    """ROUGE-N F1.  ("the cat sat", "the cat was sat", n=2): bigrams {the cat, cat sat} vs
    {the cat, cat was, was sat}: overlap 1, P = 1/2, R = 1/3, F1 = 0.4"""
    pred, ref = ngrams(words(prediction), n), ngrams(words(reference), n)
    overlap = sum(min(count, pred[g]) for g, count in ref.items())
    return f1(overlap, sum(pred.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, by dynamic programming one row at a time:
    table[i][j] = table[i-1][j-1] + 1 if a[i-1] == b[j-1] else max(table[i-1][j], table[i][j-1]).
    (["the", "cat", "sat"], ["the", "cat", "was", "sat"]) -> 3"""
    prev = [0] * (len(b) + 1)  # row i-1 of the table
    for x in a:
        row = [0]
        for j, y in enumerate(b, start=1):
            row.append(prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1]))
        prev = row
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1.  ("the cat sat", "the cat was sat"): LCS 3, P = 3/3, R = 3/4, F1 = 6/7 = 0.857"""
    pred, ref = words(prediction), words(reference)
    return f1(lcs_length(pred, ref), len(pred), len(ref)) if pred and ref else 0.0


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the word lists are equal.  ("Get terminal size", "get_terminal_size") -> 1.0"""
    return float(words(prediction) == words(reference))


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean rouge1, rouge2, rougeL F1 and exact_match over a corpus, each in [0, 1].
    (["get size", "open"], ["get terminal size", "close"]) -> rouge1 = (0.8 + 0) / 2 = 0.4, rouge2 0, rougeL 0.4,
    exact_match 0"""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("no examples to score")
    scores = {"rouge1": lambda p, r: rouge_n(p, r, 1), "rouge2": lambda p, r: rouge_n(p, r, 2), "rougeL": rouge_l,
              "exact_match": exact_match}
    return {name: sum(map(score, predictions, references)) / len(references) for name, score in scores.items()}
