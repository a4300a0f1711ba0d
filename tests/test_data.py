"""Tests for minis2s/data.py: the docstring-naming task, user data files, the collator, batching.

Covers: split sizes, disjointness (near-duplicates included), stability under racing builders; no
leakage of the name into the source; token lengths with the real BERT vocabulary; the text helpers on
worked examples; load_pairs on good and bad files (errors name the file and line); labels = target ids
without [CLS], -100 at padding, and shift_tokens_right(labels) giving back the decoder input;
deterministic, complete, DDP-sharded batches. Offline. 7 s on an idle 2-core machine (up to 31 s on a
busy shared one), mostly three data-set builds (a child process each) and importing torch.

    python -m pytest tests/test_data.py -q
"""

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from minis2s import load_tokenizer, shift_tokens_right
from minis2s.data import (SPLITS, Pair, Seq2SeqCollator, build_docstring_task, clean_docstring, iterate_batches,
                          load_pairs, make_pairs, mentions_name, name_to_words, names_in_vocab, near_duplicates,
                          normalise, split_of)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def task(cache):
    return build_docstring_task(cache)


# ---------------------------------------------------------------------------------------------- the task


def test_counts_are_non_trivial_and_roughly_80_10_10(task):
    counts = {split: len(task[split]) for split in SPLITS}
    total = sum(counts.values())
    assert total >= 3000, counts
    assert counts["validation"] >= 250 and counts["test"] >= 250, counts
    assert 0.75 <= counts["train"] / total <= 0.85, counts


def test_splits_are_disjoint_and_deduplicated(task):
    keys = {split: [normalise(p.source) for p in task[split]] for split in SPLITS}
    for split in SPLITS:
        assert len(set(keys[split])) == len(keys[split]), f"duplicate sources in {split}"
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            shared = set(keys[a]) & set(keys[b])
            assert not shared, f"{len(shared)} sources in both {a} and {b}, e.g. {sorted(shared)[:3]}"


def test_near_duplicates_naming_the_same_thing_share_a_split(task):
    # Brute force over every pair of examples with the same target, independent of make_pairs' grouping.
    by_target = {}
    for split in SPLITS:
        for pair in task[split]:
            by_target.setdefault(pair.target, []).append((split, pair.source))
    crossing = [(a, b) for group in by_target.values() for i, a in enumerate(group) for b in group[i + 1 :]
                if a[0] != b[0] and near_duplicates(a[1], b[1])]
    assert not crossing, crossing[:3]
    # Everything else is in the split of its own hash.
    alone = [(split, source) for group in by_target.values() for split, source in group
             if not any(near_duplicates(source, other) for _, other in group if other != source)]
    assert len(alone) > 3000
    assert all(split_of(source) == split for split, source in alone)


def test_rebuild_is_identical_even_when_two_builders_race(task, cache, tmp_path):
    # Two builders (think DDP ranks) start on an empty cache at once: one folder wins the rename, the
    # other's is discarded, and both return the same data, byte-identical to the first build.
    with ThreadPoolExecutor(2) as pool:
        racing = list(pool.map(build_docstring_task, [tmp_path, tmp_path]))
    assert racing[0] == racing[1] == task
    (first,) = cache.iterdir()
    (second,) = tmp_path.iterdir()  # one folder: no temporary ".building-*" left behind
    assert first.name == second.name
    for split in SPLITS:
        assert (first / f"{split}.jsonl").read_bytes() == (second / f"{split}.jsonl").read_bytes(), split
    meta = json.loads((first / "meta.json").read_text())
    assert meta["python"] == sys.version
    assert meta["counts"] == {split: len(task[split]) for split in SPLITS}


def test_cached_task_is_read_back_unchanged(task, cache):
    assert build_docstring_task(cache) == task


def test_no_trivial_leak_of_the_name(task, cache):
    (folder,) = cache.iterdir()
    for split in SPLITS:
        for line in (folder / f"{split}.jsonl").read_text().splitlines():
            record = json.loads(line)
            name = record["qualname"].rsplit(".", 1)[-1]
            # Independent of mentions_name: the identifier as written in the code, as a whole word.
            assert not re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", record["source"], re.IGNORECASE), record
            assert record["target"] == name_to_words(name)
            assert not mentions_name(record["source"], record["target"]), record


def test_lengths_are_within_the_budget(task):
    for split in SPLITS:
        for pair in task[split]:
            assert 3 <= len(pair.source.split()) <= 48, pair
            assert 1 <= len(pair.target.split()) <= 8, pair


def test_token_lengths_fit_the_budget_with_the_bert_vocabulary(task, minilm):
    # The training budget assumes sources of <= 64 WordPiece tokens and targets of <= 16 labels.
    tok = load_tokenizer(minilm)
    pairs = [p for split in SPLITS for p in task[split]]
    source_lengths = [len(ids) for ids in tok([p.source for p in pairs])["input_ids"]]
    label_lengths = [len(ids) - 1 for ids in tok([p.target for p in pairs])["input_ids"]]  # [CLS] dropped
    too_long = sum(n > 64 for n in source_lengths) / len(pairs)
    assert too_long < 0.03, f"{too_long:.1%} of sources are longer than 64 tokens"
    assert max(label_lengths) <= 16, max(label_lengths)


def test_vocab_filter_keeps_english_names_in_their_splits(task, cache, minilm):
    vocab = load_tokenizer(minilm).backend_tokenizer.get_vocab()
    english = build_docstring_task(cache, vocab=vocab)
    assert len(english["train"]) >= 1200 and len(english["validation"]) >= 150 and len(english["test"]) >= 150
    for split in SPLITS:
        assert all(w in vocab for p in english[split] for w in p.target.split())
        assert set(english[split]) <= set(task[split])  # a filter: no pair changes split
    assert not any(p.target == "tanh" for split in SPLITS for p in english[split])


def test_names_in_vocab():
    pairs = [Pair("Return the hyperbolic tangent of x.", "tanh"), Pair("Square of the deviation.", "variance"),
             Pair("Clear the frames.", "clear frames"), Pair("Clear the frame.", "clear frame")]
    vocab = {"variance": 0, "clear": 1, "frames": 2, "tan": 3, "##h": 4}
    assert names_in_vocab(pairs, vocab) == pairs[1:3]


# ---------------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("name, words", [
    ("get_terminal_size", "get terminal size"), ("HTTPServer", "http server"),
    ("assertWarnsRegex", "assert warns regex"),
    ("v6_int_to_packed", "v6 int to packed"), ("tanh", "tanh"), ("OrderedDict", "ordered dict"), ("_x__y_", "x y"),
])
def test_name_to_words(name, words):
    assert name_to_words(name) == words


@pytest.mark.parametrize("doc, cleaned", [
    ("int(x=0) -> integer\nint(x, base=10) -> integer\n\nConvert a number\n   to an integer.\n\nMore.",
     "Convert a number to an integer."),
    ("Point(x, y)", ""),
    ("\n    Return the size.\n\n    Details.\n    ", "Return the size."),
    ("S.join(iterable) -> str\n\nConcatenate any number of strings.", "Concatenate any number of strings."),
    ("Return   x\tand y.", "Return x and y."),
])
def test_clean_docstring(doc, cleaned):
    assert clean_docstring(doc) == cleaned


@pytest.mark.parametrize("source, target, leaks", [
    ("Close the file.", "close", True),
    ("Like get_terminal_size() but cached.", "get terminal size", True),
    ("Use getTerminalSize instead.", "get terminal size", True),
    ("Ask the terminal: size in columns.", "get terminal size", False),
    ("The terminal size.", "get terminal size", False),
    ("Returns a getterminalsize object.", "get terminal size", True),
    ("Return the hyperbolic tangent of x.", "tanh", False),
    ("Put together the parts.", "get", False),  # "get" inside "together" is not a word
])
def test_mentions_name(source, target, leaks):
    assert mentions_name(source, target) is leaks


def test_split_of_is_pinned():
    # sha256 of the normalised text; these values change only if the split recipe changes.
    assert split_of("Return the hyperbolic tangent of x.") == split_of("return the HYPERBOLIC tangent of x")
    assert [split_of(f"example {i}") for i in range(10, 15)] == ["train", "validation", "train", "train", "test"]


@pytest.mark.parametrize("a, b, expected", [
    ("Return the hyperbolic tangent of x.", "Return the hyperbolic tangent of z.", True),  # 5/7
    ("Return the hyperbolic tangent of x.", "Return the tangent of x (measured in radians).", False),  # 4/9
    ("Set the stream position.", "Move to new file position.", False),
])
def test_near_duplicates(a, b, expected):
    assert near_duplicates(a, b) is expected


def test_make_pairs_drops_ambiguous_leaking_and_boilerplate_sources():
    rows = [
        ["m", "hexlify", "function", "Hexadecimal representation of binary data."],
        ["m", "b2a_hex", "function", "Hexadecimal representation of binary data."],  # same text, other name
        ["m", "Queue.get", "method", "Remove and return an item from the queue."],
        ["n", "Other.get", "method", "Remove and return an item from the queue."],  # same text, same name
        ["m", "close", "function", "Close the file."],  # leak
        ["m", "T.x", "attribute", "Alias for field number 0"],  # boilerplate
        ["m", "tanh", "function", "tanh(x)\n\nReturn the hyperbolic tangent of x."],
    ]
    records = make_pairs(rows)
    assert [(r["qualname"], r["source"], r["target"]) for r in records] == [
        ("Queue.get", "Remove and return an item from the queue.", "get"),
        ("tanh", "Return the hyperbolic tangent of x.", "tanh"),
    ]


def test_make_pairs_groups_near_duplicates_with_the_same_name():
    # On their own the tanh texts hash to train, validation, test and train; as one group they follow
    # the group's first (sorted) text, "... of w." (train). A near-duplicate with another name keeps the
    # split of its own hash (test): minimal pairs across splits are fair, they do not give the answer away.
    texts = [f"Return the hyperbolic tangent of {v}." for v in "xzyw"]
    assert [split_of(t) for t in texts] == ["train", "validation", "test", "train"]
    rows = [[f"m{i}", "tanh", "function", t] for i, t in enumerate(texts)]
    rows.append(["m9", "other_tanh", "function", "Return the hyperbolic tangent of v."])
    records = make_pairs(rows)
    assert [r["split"] for r in records if r["target"] == "tanh"] == ["train"] * 4
    assert [r["split"] for r in records if r["target"] == "other tanh"] == ["test"]


# ---------------------------------------------------------------------------------------------- load_pairs


def test_load_pairs_reads_jsonl_and_tsv(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"source": "one two", "target": "x", "extra": 1}\n\n{"target": "y", "source": "три"}\r\n',
                     encoding="utf-8")
    assert load_pairs(jsonl) == [Pair("one two", "x"), Pair("три", "y")]
    tsv = tmp_path / "a.tsv"
    tsv.write_bytes("\ufeffsource\ttarget\none two\tx\r\n\n  \nthree\ty\n".encode("utf-8"))
    assert load_pairs(tsv) == [Pair("one two", "x"), Pair("three", "y")]
    no_header = tmp_path / "b.tsv"
    no_header.write_text("one\tx\n")
    assert load_pairs(no_header) == [Pair("one", "x")]


@pytest.mark.parametrize("name, content, message", [
    ("a.tsv", b"one\tx\ntwo three\n", r"line 2: expected 2 tab-separated columns \(source, target\), found 1"),
    ("a.tsv", b"one\tx\ty\n", r"line 1: expected 2 tab-separated columns .* found 3"),
    ("a.tsv", b"one\tx\n\n\ntwo\t \n", r"line 4: empty target"),
    ("a.tsv", b"\tx\n", r"line 1: empty source"),
    ("a.tsv", b"ok\tfine\nbad \xff\tx\n", r"line 2: not UTF-8 \(byte 0xff at byte offset 12\)"),
    ("a.tsv", b"\xef\xbb\xbfok\tfine\nbad \xfe\tx\n", r"line 2: not UTF-8 \(byte 0xfe at byte offset 15\)"),  # BOM
    ("a.jsonl", b'{"source": "a", "target": "b"}\n{"source": "a"}\n',
     r"line 2: missing key 'target' \(keys found: \['source'\]\)"),
    ("a.jsonl", b'{"src": "a", "tgt": "b"}\n', r"line 1: missing key 'source'"),
    ("a.jsonl", b'{"source": "a", "target": ""}\n', r"line 1: empty target"),
    ("a.jsonl", b'{"source": "a", "target": 3}\n', r"line 1: 'target' must be a string, found int"),
    ("a.jsonl", b'{"source": "a",\n', r"line 1: invalid JSON"),
    ("a.jsonl", b'["a", "b"]\n', r"line 1: expected a JSON object, found list"),
    ("a.jsonl", b"\n\n", r"no pairs found"),
    ("a.csv", b"a,b\n", r"unknown extension '.csv'; expected .jsonl or .tsv"),
])
def test_load_pairs_errors_name_the_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        load_pairs(path)


# ---------------------------------------------------------------------------------------------- collator

WORDS = "return the size of a terminal window get set close file open read write x y".split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """minis2s's WordPiece tokenizer on a tiny vocabulary: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, then WORDS."""
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    return load_tokenizer(vocab)


PAIRS = [Pair("Return the size of a terminal window.", "get terminal size"),
         Pair("Close the file.", "close"),
         Pair("Open a file for read and write.", "open file")]


def test_collator_labels_drop_cls_and_mask_padding(tokenizer):
    batch = Seq2SeqCollator(tokenizer, max_source_len=64, max_target_len=16)(PAIRS)
    full = tokenizer([p.target for p in PAIRS], padding=True, return_tensors="pt")["input_ids"]  # [CLS] ... [SEP]
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["labels"].shape == (3, full.shape[1] - 1)
    expected = torch.tensor([
        [tokenizer.convert_tokens_to_ids(w) for w in ["get", "terminal", "size"]] + [sep],
        [tokenizer.convert_tokens_to_ids("close"), sep, -100, -100],
        [tokenizer.convert_tokens_to_ids(w) for w in ["open", "file"]] + [sep, -100],
    ])
    assert torch.equal(batch["labels"], expected), batch["labels"]
    assert not (batch["labels"] == pad).any() and not (batch["labels"] == cls).any()


def test_shift_tokens_right_of_labels_is_the_decoder_input(tokenizer):
    # What the model feeds the decoder when given only labels (as transformers does it; minis2s's shift equals
    # transformers' by tests/test_parity.py) must be "[CLS] a b c": the target ids without their last
    # column, [PAD] where the target is padded.
    labels = Seq2SeqCollator(tokenizer)(PAIRS)["labels"]
    full = tokenizer([p.target for p in PAIRS], padding=True, return_tensors="pt")["input_ids"]
    decoder_input_ids = shift_tokens_right(labels, decoder_start_token_id=tokenizer.cls_token_id,
                                           pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(decoder_input_ids, full[:, :-1]), (decoder_input_ids, full)


def test_collator_truncates_and_keeps_sep(tokenizer):
    pairs = [Pair(" ".join(WORDS * 3), " ".join(WORDS))]
    batch = Seq2SeqCollator(tokenizer, max_source_len=8, max_target_len=5)(pairs)
    assert batch["input_ids"].shape == (1, 8) and batch["input_ids"][0, -1] == tokenizer.sep_token_id
    assert batch["labels"].shape == (1, 5) and batch["labels"][0, -1] == tokenizer.sep_token_id
    assert batch["labels"][0, :4].tolist() == tokenizer.convert_tokens_to_ids(WORDS[:4])


def test_collator_rejects_targets_without_cls(tokenizer):
    def no_specials(texts, **kwargs):
        return tokenizer(texts, add_special_tokens=False, **kwargs)

    no_specials.cls_token_id = tokenizer.cls_token_id
    with pytest.raises(ValueError, match=r"\[CLS\] is 2"):
        Seq2SeqCollator(no_specials)(PAIRS)


# ---------------------------------------------------------------------------------------------- batches

TOY = [Pair("w " * (i % 7 + 1), str(i)) for i in range(103)]


def test_docstring_example_of_iterate_batches():
    five = TOY[:5]
    assert list(iterate_batches(five, 2, shuffle=False)) == [five[0:2], five[2:4], five[4:5]]
    assert list(iterate_batches(five, 2, shuffle=False, rank=1, world_size=2)) == [five[2:4]]
    assert list(iterate_batches(five, 2, shuffle=False, drop_last=True)) == [five[0:2], five[2:4]]


@pytest.mark.parametrize("sort_window", [1, 4])
def test_batches_are_deterministic_and_cover_every_pair_once(sort_window):
    epoch0 = list(iterate_batches(TOY, 8, seed=1, epoch=0, sort_window=sort_window))
    assert epoch0 == list(iterate_batches(TOY, 8, seed=1, epoch=0, sort_window=sort_window))
    assert epoch0 != list(iterate_batches(TOY, 8, seed=1, epoch=1, sort_window=sort_window))
    assert epoch0 != list(iterate_batches(TOY, 8, seed=2, epoch=0, sort_window=sort_window))
    assert sorted(p.target for b in epoch0 for p in b) == sorted(p.target for p in TOY)
    assert sum(len(b) < 8 for b in epoch0) == 1


def test_sort_window_reduces_padding():
    def padded(batches):
        return sum(len(b) * max(len(p.source) for p in b) for b in batches)

    plain = padded(iterate_batches(TOY, 8, seed=0))
    sorted_ = padded(iterate_batches(TOY, 8, seed=0, sort_window=4))
    assert sorted_ < 0.85 * plain, (sorted_, plain)


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_ddp_ranks_get_disjoint_equal_shards(world_size):
    single = list(iterate_batches(TOY, 8, seed=3, epoch=2))  # 13 batches
    shards = [list(iterate_batches(TOY, 8, seed=3, epoch=2, rank=r, world_size=world_size)) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1, [len(s) for s in shards]
    assert len(shards[0]) == len(single) // world_size
    interleaved = [b for step in zip(*shards) for b in step]
    assert interleaved == single[: len(interleaved)]


def test_bad_rank_is_rejected():
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        next(iterate_batches(TOY, 8, rank=2, world_size=2))
