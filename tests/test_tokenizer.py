"""Parity tests for minis2s.tokenizer against transformers' BertTokenizerFast (the reference: 4.57.6, or 5.x in the
[test-latest] environment).

Every check runs twice: on the MiniLM checkpoint folder (loaded from its tokenizer.json) and on its bare vocab.txt
copied into a temporary folder (pipeline assembled from `tokenizers` parts, compared with transformers' tokenizer
built from that file: see `bare_vocab_reference`, and `test_bare_vocab_clean_up_default` for the one default 5.x
changed). Covered: input_ids / token_type_ids / attention_mask and decoded text (with and without special tokens) on
a corpus of accents, CJK, emoji, punctuation runs, control characters, empty and whitespace-only strings; truncation
of long texts and of pairs (all strategies, and the whole-word shortcut for long pairs against the `tokenizers`
truncation it stands in for); batch padding; return_tensors="pt"; the save() round trip (reloaded by minis2s and by
transformers); a cased vocab; and the error messages for missing, empty or corrupt files and bad arguments.
The MiniLM folder comes from the `minilm` fixture in conftest.py (skipped if absent, failed when CI=true).

Run:  python -m pytest tests/test_tokenizer.py -q      (offline; about 15 s on 2 cores)
"""

import json
import shutil
import time

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import normalizers, processors
from transformers import AutoTokenizer, BertTokenizerFast

from conftest import TRANSFORMERS_5
from minis2s.tokenizer import (
    VERY_LARGE_INTEGER,
    BatchEncoding,
    Tokenizer,
    _word_prefix,
    load_tokenizer,
    read_vocab,
)

CORPUS = [
    "Héllo, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Tokenizers split unaffable words into wordpieces",
    "Ça va? Naïve café, crème brûlée, São Paulo, Øresund, İstanbul, straße, ﬁnance",
    "e\u0301 (a bare combining accent) and \u00adsoft\u00adhyphens",
    "北京是中国的首都。東京は日本の首都です。서울은 한국의 수도입니다.",
    "Mixed 中文and English混合",
    "Emoji: 🙂 👍🏽 👨‍👩‍👧 🇫🇷 — done",
    "Punctuation runs!!! ??? ... --- ,,, ;;; «quoted» “curly” ‘single’ (brackets) [x] {y}",
    "don't stop, it's fine; I'm sure you've heard they're here",
    "",
    "   ",
    "\t\n\r\n \u00a0\u2003",
    "control\x00chars\x01here\x7f and\ufffd replacement, zero\u200bwidth, tab\tnew\nline",
    "[CLS] special [SEP] tokens [MASK] in [PAD] text [UNK] and [cls] lowercased",
    "##ing ## # prefixes",
    "numbers 3.14159 1,000,000 2024-01-31 10:30am $5 50%",
    "https://example.com/path?query=value&x=1 user@example.org",
    "a" * 150 + " word longer than 100 characters becomes [UNK]",
    "Ελληνικά, русский, עברית, العربية, हिन्दी, ไทย",
]
LONG_TEXT = " ".join(CORPUS) * 4  # ~1300 tokens: over MiniLM's 512
MEDIUM_TEXT = " ".join(CORPUS[1:10:2])  # ~100 tokens. (transformers' pair truncation is quadratic in the length.)
PAIRS = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("short", MEDIUM_TEXT),
    (MEDIUM_TEXT, "short"),
    (MEDIUM_TEXT, MEDIUM_TEXT[::-1]),
    ("Héllo", ""),
    ("", ""),
]
KEYS = ("input_ids", "token_type_ids", "attention_mask")


# ------------------------------------------------------------------------------------------------ fixtures
# transformers' default clean_up_tokenization_spaces for a tokenizer built from a bare vocab.txt. 4.57.6 builds the
# fast tokenizer by converting the slow BertTokenizer and inherits its init kwargs, default True
# (models/bert/tokenization_bert.py:111, tokenization_utils_fast.py:131-153). 5.x has one BertTokenizer on the
# tokenizers backend with no such default, so the base class's False applies (tokenization_utils_base.py:1083).
# minis2s keeps 4.57.6's True.
BARE_VOCAB_CLEAN_UP = {"transformers 4": True, "transformers 5": False}
MINIS2S_BARE_VOCAB_CLEAN_UP = True


def bare_vocab_reference(vocab_file) -> BertTokenizerFast:
    """transformers' tokenizer built from a bare vocab.txt, as the installed version takes it.

    4.x: `BertTokenizerFast(vocab_file=...)`. 5.x: BertTokenizerFast is an alias of BertTokenizer, whose constructor
    takes `vocab=` (a path or a dict) and silently ignores `vocab_file=`, building a 5-token default vocabulary
    instead (models/bert/tokenization_bert.py:79-104), so every id would be [UNK].
    """
    ref = BertTokenizerFast(vocab=str(vocab_file)) if TRANSFORMERS_5 else BertTokenizerFast(vocab_file=str(vocab_file))
    assert len(ref) > 5, f"the reference ignored {vocab_file}: it has {len(ref)} tokens"
    return ref


@pytest.fixture(scope="module", params=["tokenizer.json", "vocab.txt"])
def toks(request, minilm, tmp_path_factory) -> tuple[Tokenizer, BertTokenizerFast]:
    """(minis2s tokenizer, transformers reference) loaded the same way."""
    if request.param == "tokenizer.json":
        return load_tokenizer(minilm), AutoTokenizer.from_pretrained(minilm)
    vocab_dir = tmp_path_factory.mktemp("bare_vocab")
    shutil.copy(minilm / "vocab.txt", vocab_dir / "vocab.txt")
    tok, ref = load_tokenizer(vocab_dir), bare_vocab_reference(vocab_dir / "vocab.txt")
    # Decoding is compared under the clean-up setting the reference actually uses (5.x changed its default, see
    # BARE_VOCAB_CLEAN_UP; test_bare_vocab_clean_up_default checks both defaults), set explicitly on ours.
    tok.clean_up_tokenization_spaces = ref.clean_up_tokenization_spaces
    return tok, ref


def assert_same_encoding(ours, ref, what: str):
    assert list(ours) == list(ref), f"{what}: keys {list(ours)} != {list(ref)}"
    for key in KEYS:
        a, b = ours[key], ref[key]
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor) and a.dtype == torch.long, f"{what}: {key} is {type(a)}"
            assert a.shape == b.shape, f"{what}: {key} shape {tuple(a.shape)} != {tuple(b.shape)}"
            assert torch.equal(a, b), f"{what}: {key} differs at {(a != b).nonzero()[:5].tolist()}"
        else:
            assert a == b, f"{what}: {key}\n ours {a}\n ref  {b}"


# ------------------------------------------------------------------------------------------------ encoding
def test_docstring_example(toks):
    tok, _ = toks
    enc = tok("Héllo, world!")
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "hello", ",", "world", "!", "[SEP]"]
    assert enc.input_ids == [101, 7592, 1010, 2088, 999, 102]  # attribute access
    assert tok.tokenize("tokenization") == ["token", "##ization"]
    assert tok.decode(enc["input_ids"]) == "[CLS] hello, world! [SEP]"


@pytest.mark.parametrize("text", CORPUS, ids=[f"c{i}" for i in range(len(CORPUS))])
def test_single_text_parity(toks, text):
    tok, ref = toks
    expected = ref(text)
    assert_same_encoding(tok(text), expected, repr(text))
    assert tok.tokenize(text) == ref.tokenize(text)
    ids = expected["input_ids"]
    for skip in (False, True):
        assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), (text, skip)
    assert tok(text, add_special_tokens=False)["input_ids"] == ref(text, add_special_tokens=False)["input_ids"]


@pytest.mark.filterwarnings("ignore:`max_length` is ignored:UserWarning")  # transformers' note on padding=True
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": True},
        {"padding": "longest", "return_tensors": "pt"},
        {"padding": "max_length", "max_length": 40, "truncation": True, "return_tensors": "pt"},
        {"padding": "max_length", "max_length": 40},  # pads but does not truncate
        {"truncation": True, "max_length": 12},
        {"max_length": 12},  # max_length alone switches truncation on (transformers' rule)
        {"padding": True, "max_length": 12},  # ... but not when padding is on
        {"truncation": True},  # falls back to model_max_length (512 for MiniLM, none for a bare vocab)
        {"padding": "max_length"},  # likewise
        {"padding": True, "add_special_tokens": False},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain",
)
def test_batch_parity(toks, kwargs):
    tok, ref = toks
    batch = CORPUS + [LONG_TEXT]
    assert_same_encoding(tok(batch, **kwargs), ref(batch, **kwargs), f"batch {kwargs}")
    assert_same_encoding(tok(LONG_TEXT, **kwargs), ref(LONG_TEXT, **kwargs), f"long text {kwargs}")


@pytest.mark.parametrize("max_length", [3, 4, 9, 32, 600])
@pytest.mark.parametrize("truncation", [True, "longest_first", "only_first", "only_second"])
def test_pair_truncation_parity(toks, truncation, max_length):
    tok, ref = toks
    first, second = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    kwargs = {"truncation": truncation, "max_length": max_length}
    try:
        expected = ref(first, second, **kwargs)
    except Exception:  # e.g. only_first when the first sequence is too short to absorb the cut
        with pytest.raises(ValueError, match=f"truncation='{kwargs['truncation']}'.*too short|cannot hold"):
            tok(first, second, **kwargs)
        return
    assert_same_encoding(tok(first, second, **kwargs), expected, f"pairs {kwargs}")
    assert_same_encoding(
        tok(first, second, padding=True, return_tensors="pt", **kwargs),
        ref(first, second, padding=True, return_tensors="pt", **kwargs),
        f"padded pairs {kwargs}",
    )


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_truncation_matches_tokenizers(minilm, strategy):
    """On every small case, with and without special tokens, our truncation (including the whole-word shortcut for
    long pairs, `_shorten_long_pairs`) gives the ids of the `tokenizers` truncation on the whole texts, or fails
    where it fails. Texts of 0 to 14 pieces, in words of 1 to 3 pieces."""
    tok, backend = load_tokenizer(minilm), Backend.from_file(str(minilm / "tokenizer.json"))
    backend.no_padding()
    words = ["a", "tokenization", "b", "unaffable"]  # 1, 2, 1, 3 pieces; two orders, so that word ends differ
    texts = [" ".join(order[i % 4] for i in range(n)) for order in (words, words[::-1]) for n in range(9)]
    for specials in (True, False):
        for limit in range(3 if specials else 1, 14):
            backend.enable_truncation(limit, strategy=strategy)
            for a in texts:
                for b in [None, *texts]:
                    args = (a,) if b is None else (a, b)
                    try:
                        expected = backend.encode(*args, add_special_tokens=specials).ids
                    except Exception:
                        expected = "error"
                    try:
                        got = tok(*args, truncation=strategy, max_length=limit, add_special_tokens=specials)
                        got = got["input_ids"]
                    except ValueError:
                        got = "error"
                    assert got == expected, f"{args} limit={limit} specials={specials} {strategy}"


@pytest.mark.parametrize("lowercase", [True, False])
def test_word_prefix_gives_the_first_pieces(minilm, lowercase):
    """The shortcut's premise: the text up to the end of any word tokenises to exactly the first pieces."""
    backend = load_tokenizer(minilm).backend_tokenizer
    if not lowercase:
        backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    for text in CORPUS:
        enc = backend.encode(text, add_special_tokens=False)
        for i in range(len(enc.ids)):
            prefix, n = _word_prefix(text, enc, i)
            assert n > i and backend.encode(prefix, add_special_tokens=False).ids == enc.ids[:n], (text, i)


def test_long_pair_truncation_is_fast(toks):
    """`tokenizers` alone takes ~1 s here (it pairs up every overflow window of both texts); the whole-word
    shortcut makes cutting a 2 x 1300-token pair instant."""
    tok, _ = toks
    start = time.perf_counter()
    ids = tok(LONG_TEXT, LONG_TEXT, truncation=True, max_length=16)["input_ids"]
    assert time.perf_counter() - start < 1.0
    a = tok(LONG_TEXT, add_special_tokens=False)["input_ids"]
    assert len(a) > 1000 and ids == [101, *a[:6], 102, *a[:7], 102]  # 13 pieces; on a tie the first loses the odd one


def test_single_pair_parity(toks):
    tok, ref = toks
    for a, b in PAIRS[:4]:
        assert_same_encoding(tok(a, b), ref(a, b), f"pair {a[:20]!r}, {b[:20]!r}")
        assert_same_encoding(tok(a, b, max_length=20), ref(a, b, max_length=20), "pair max_length=20")
    # A single pair with an empty second text stays a pair, as in a batch (transformers drops it when single).
    assert tok("Héllo", "")["input_ids"] == ref(["Héllo"], [""])["input_ids"][0] == [101, 7592, 102, 102]


def test_batch_decode_parity(toks):
    tok, ref = toks
    batch = ref(CORPUS, padding=True, return_tensors="pt")["input_ids"]
    for skip in (False, True):
        expected = ref.batch_decode(batch, skip_special_tokens=skip)
        assert tok.batch_decode(batch, skip_special_tokens=skip) == expected
        assert tok.batch_decode(batch.tolist(), skip_special_tokens=skip) == expected
    assert tok.decode(batch[0]) == ref.decode(batch[0])  # a 1-D tensor
    assert tok.decode(7592) == ref.decode(7592) == "hello"
    # An explicit clean-up flag overrides the tokenizer's default in both directions.
    ids = ref("it's don't")["input_ids"]
    for clean in (False, True):
        expected = ref.decode(ids, clean_up_tokenization_spaces=clean)
        assert tok.decode(ids, clean_up_tokenization_spaces=clean) == expected, clean


def test_attributes_parity(toks):
    tok, ref = toks
    for name in ("pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id", "mask_token_id", "vocab_size"):
        assert getattr(tok, name) == getattr(ref, name), name
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id) == (
        0, 101, 102, 100, 103,
    )  # fmt: skip
    assert tok.model_max_length == ref.model_max_length
    assert tok.clean_up_tokenization_spaces == ref.clean_up_tokenization_spaces
    assert len(tok) == len(ref) == 30522
    ids = ref("Héllo, tokenization! [MASK]")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(ids, skip_special_tokens=True) == ref.convert_ids_to_tokens(ids, True)
    assert tok.convert_ids_to_tokens(101) == "[CLS]"
    tokens = ["[CLS]", "token", "##ization", "not-a-token", "[PAD]"]
    assert tok.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens) == [101, 19204, 3989, 100, 0]
    assert tok.convert_tokens_to_ids("[SEP]") == 102


def test_bare_vocab_clean_up_default(minilm, tmp_path):
    """From a bare vocab.txt, minis2s turns decode's clean-up on, as transformers 4.57.6 does; 5.x turns it off.
    Each default is pinned, so a change on either side shows here, and the parity tests compare under the
    reference's own setting (the `toks` fixture)."""
    shutil.copy(minilm / "vocab.txt", tmp_path / "vocab.txt")
    tok, ref = load_tokenizer(tmp_path), bare_vocab_reference(tmp_path / "vocab.txt")
    assert tok.clean_up_tokenization_spaces is MINIS2S_BARE_VOCAB_CLEAN_UP
    expected = BARE_VOCAB_CLEAN_UP["transformers 5" if TRANSFORMERS_5 else "transformers 4"]
    assert ref.clean_up_tokenization_spaces is expected
    ids = ref("it's")["input_ids"]
    assert tok.decode(ids) == "[CLS] it's [SEP]"  # the clean-up joins "it ' s"
    assert ref.decode(ids) == ("[CLS] it's [SEP]" if expected else "[CLS] it ' s [SEP]")


def test_return_types(toks):
    tok, _ = toks
    single, batch = tok("a b"), tok(["a b", "c"])
    assert isinstance(single, BatchEncoding) and isinstance(single["input_ids"][0], int)
    assert isinstance(batch["input_ids"][0], list) and len(batch["input_ids"]) == 2
    pt = tok("a b", return_tensors="pt")
    assert pt["input_ids"].shape == (1, 4) and pt["input_ids"].dtype == torch.long
    assert tok([]) == {"input_ids": [], "token_type_ids": [], "attention_mask": []}
    assert tok([], return_tensors="pt")["input_ids"].shape == (0, 0)
    # Settings of one call never leak into the next.
    tok(["a", "a b c"], padding="max_length", max_length=9)
    assert tok("a")["input_ids"] == [101, 1037, 102]


# ------------------------------------------------------------------------------------------------ saving
def test_save_round_trip(toks, tmp_path):
    tok, ref = toks
    written = tok.save(tmp_path / "saved")
    assert sorted(p.name for p in written) == ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(p.name for p in written)  # no temp files
    assert read_vocab(tmp_path / "saved" / "vocab.txt") == ref.get_vocab()
    reloaded = [
        load_tokenizer(tmp_path / "saved"),
        load_tokenizer(tmp_path / "saved" / "vocab.txt"),  # the vocab.txt alone, assembled from its parts
        BertTokenizerFast.from_pretrained(tmp_path / "saved"),
        AutoTokenizer.from_pretrained(tmp_path / "saved"),
    ]
    expected = ref(CORPUS, PAIRS[0][:1] * len(CORPUS), padding=True, truncation=True, max_length=48)
    for other in reloaded:
        name = type(other).__name__
        got = other(CORPUS, PAIRS[0][:1] * len(CORPUS), padding=True, truncation=True, max_length=48)
        assert_same_encoding(BatchEncoding(got), expected, f"reloaded {name}")
        assert other.model_max_length == tok.model_max_length, name
        assert other.clean_up_tokenization_spaces == tok.clean_up_tokenization_spaces, name
        assert other.batch_decode(expected["input_ids"]) == ref.batch_decode(expected["input_ids"]), name


def test_cased_vocab_from_config(minilm, tmp_path):
    """tokenizer_config.json's do_lower_case=False is honoured from a vocab.txt and overrides a tokenizer.json."""
    shutil.copy(minilm / "vocab.txt", tmp_path / "vocab.txt")
    config = {"do_lower_case": False, "model_max_length": 64, "clean_up_tokenization_spaces": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok, ref = load_tokenizer(tmp_path), BertTokenizerFast.from_pretrained(tmp_path)
    assert tok.do_lower_case is False and tok.model_max_length == 64 and not tok.clean_up_tokenization_spaces
    for text in CORPUS[:6]:
        assert_same_encoding(tok(text), ref(text), f"cased {text!r}")
        assert tok.decode(ref(text)["input_ids"]) == ref.decode(ref(text)["input_ids"])
    assert tok("Héllo")["input_ids"] != load_tokenizer(minilm)("Héllo")["input_ids"]

    shutil.copy(minilm / "tokenizer.json", tmp_path / "tokenizer.json")
    tok, ref = load_tokenizer(tmp_path), BertTokenizerFast.from_pretrained(tmp_path)
    assert tok.do_lower_case is False
    assert_same_encoding(tok(CORPUS[3]), ref(CORPUS[3]), "cased tokenizer.json")


# ------------------------------------------------------------------------------------------------ errors
def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path)


def test_corrupt_files(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("")
    with pytest.raises(ValueError, match=r"vocab\.txt: vocab file is empty"):
        load_tokenizer(tmp_path)
    vocab.write_text("[PAD]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(ValueError, match=r"vocab\.txt: the unk_token '\[UNK\]' is not in the vocabulary"):
        load_tokenizer(vocab)
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\n")
    with pytest.raises(ValueError, match="'hello' appears twice, on lines 5 and 6"):
        load_tokenizer(vocab)
    vocab.write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        load_tokenizer(vocab)
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json\b.*: Expecting property name"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a valid tokenizers file"):
        load_tokenizer(tmp_path)
    # A tiny hand-made vocabulary without [MASK] works; mask_token_id is then None.
    (tmp_path / "tokenizer.json").unlink()
    tiny = load_tokenizer(tmp_path)
    assert tiny.mask_token_id is None and tiny("Hello xyz")["input_ids"] == [2, 4, 1, 3]
    # A tokenizer.json whose template is not BERT's is refused (the models expect [CLS] A [SEP] B [SEP]).
    backend = tiny.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="$A [SEP]", pair="$A [SEP] $B:1", special_tokens=[("[SEP]", 3)]
    )
    backend.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"tokenizer\.json: post-processor is not BERT's"):
        load_tokenizer(tmp_path)


def test_bad_arguments(toks):
    tok, _ = toks
    with pytest.raises(ValueError, match="padding must be one of"):
        tok("a", padding="bogus")
    with pytest.raises(ValueError, match="truncation must be"):
        tok("a", truncation="sideways", max_length=4)
    with pytest.raises(ValueError, match="max_length must be a positive int"):
        tok("a", max_length=0)
    with pytest.raises(ValueError, match="return_tensors must be None or 'pt'"):
        tok("a", return_tensors="np")
    with pytest.raises(ValueError, match=r"lengths \[3, 5\].*padding=True"):
        tok(["a", "a b c"], return_tensors="pt")
    with pytest.raises(ValueError, match="text has 2 entries but text_pair has 1"):
        tok(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="must both be a str, or both a list"):
        tok("a", ["b"])
    with pytest.raises(TypeError, match="text must be a str or a list of str"):
        tok(42)
    with pytest.raises(ValueError, match="max_length=1"):
        tok("a", "b", truncation=True, max_length=1)
    with pytest.raises(ValueError, match="id 40000 is outside the vocabulary"):
        tok.convert_ids_to_tokens([101, 40000])
    with pytest.raises(TypeError, match="integer ids"):
        tok.decode([1.5])
    assert tok.model_max_length in (512, VERY_LARGE_INTEGER)
