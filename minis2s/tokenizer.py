"""BERT's WordPiece tokenizer, assembled by hand from the `tokenizers` library's parts.

Text reaches a BERT encoder or decoder as integer ids. The uncased BERT recipe has five steps, each one a
component of a `tokenizers.Tokenizer` (the Rust library that transformers' `BertTokenizerFast` wraps):

1. normalise      BertNormalizer: drop control characters (\\x00, \\ufffd, zero-width \\u200b, ...), turn every
                  whitespace (\\t, \\n, \\xa0, ...) into " ", put spaces around CJK ideographs so that each becomes a
                  word, lowercase, strip accents (NFD, then drop the combining marks).
                      "Héllo, world!"  ->  "hello, world!"
2. pre-tokenise   BertPreTokenizer: split on whitespace and make every punctuation character a word of its own.
                      "hello, world!"  ->  ["hello", ",", "world", "!"]
3. WordPiece      greedy longest-match-first against vocab.txt (line number = id). Pieces after the first carry the
                  "##" prefix; a word that cannot be covered, or is longer than 100 characters, becomes [UNK].
                      "tokenization"   ->  ["token", "##ization"]        "🙂"  ->  ["[UNK]"]
4. post-process   add the special tokens and the segment ids (token_type_ids):
                      single:  [CLS] A [SEP]              0 0 .. 0
                      pair:    [CLS] A [SEP] B [SEP]      0 0 .. 0 1 .. 1
                      "Héllo, world!"  ->  [CLS] hello , world ! [SEP]  ->  [101, 7592, 1010, 2088, 999, 102]
5. batch          truncate so that pieces + special tokens fit `max_length` ("longest_first" for a pair: the
                  longer sequence is cut down to the shorter one's length, then both lose tokens alike), then pad
                  on the right with [PAD] (id 0): attention_mask is 1 on real tokens, 0 on pads.

Steps 1-3 run in Rust (`tokenizers`); steps 4-5 are a few lines of plain Python here (`Tokenizer._add_special_tokens`,
`truncation_lengths`, the padding loop in `Tokenizer.__call__`), easy to read and step through. They give the same
ids as the library's TemplateProcessing and truncation, which are still stored in tokenizer.json for transformers.

Decoding runs steps 3-4 backwards: ids -> tokens, glue each "##" piece onto the token before it, join with spaces and
remove the space before . , ! ? (the WordPiece decoder's "cleanup"):
    [101, 7592, 1010, 2088, 999, 102]  ->  "[CLS] hello, world! [SEP]"   (skip_special_tokens: "hello, world!")
Normalisation is lossy, so the round trip gives "hello, world!", never "Héllo, world!".

References: Devlin et al. 2018, BERT (arXiv 1810.04805) §3 "Input/Output Representations"; Wu et al. 2016, Google's
NMT system (arXiv 1609.08144) for WordPiece; Rothe et al. 2020 (arXiv 1907.12461) share one BERT vocabulary between
encoder and decoder, so one tokenizer serves both sides of a BERT2BERT model.

Notable choices (everything else matches transformers 4.57.6 `BertTokenizerFast` id for id, string for string):
- No transformers import. transformers appears only in the tests, as the reference.
- `clean_up_tokenization_spaces` (a second clean-up pass in `decode`, which also turns "it ' s" into "it's") follows
  transformers' own defaults: off when loading a tokenizer.json, on when building from a bare vocab.txt (there
  transformers inherits the slow BertTokenizer's default), and whatever tokenizer_config.json says when it says.
- A single pair whose second text is "" is encoded as a pair, `[CLS] A [SEP] [SEP]`, exactly as transformers encodes
  the same pair inside a batch. (transformers' single-example path tests `if text_pair:` and silently drops it.)
- An empty batch gives empty lists (transformers raises IndexError).
- Truncating a long pair costs no more than encoding it. (`tokenizers` also builds every overflow window of both
  texts and pairs them up: 2.3 s for two 1300-token texts cut to 16, growing with the square of the length.)
- A `max_length` too small for the special tokens raises ValueError (transformers silently skips truncation).
"""

from __future__ import annotations

import json
import operator
import os
import tempfile
from pathlib import Path

import torch
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

# transformers' stand-in for "this model has no known maximum length" (its VERY_LARGE_INTEGER). Truncation or
# max_length padding without an explicit max_length is then silently skipped, as in transformers.
VERY_LARGE_INTEGER = int(1e30)

# The special tokens and their BERT defaults; tokenizer_config.json may rename them. [MASK] is optional.
SPECIAL_TOKEN_DEFAULTS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
REQUIRED_SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token")

# transformers' `clean_up_tokenization`: English tokenisation artefacts, replaced in this order over the whole text.
CLEANUP_REPLACEMENTS = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


def truncation_lengths(n1: int, n2: int | None, limit: int, strategy: str = "longest_first") -> tuple[int, int]:
    """How many pieces of the first and second sequence survive when together they may keep only `limit`.

    longest_first: cut the longer sequence down to the shorter one's length, then both lose alike; an odd
    token comes off the sequence that was shorter to begin with (the first on a tie). Same as dropping one
    token at a time from whichever is longer. (10, 3, 8) -> (5, 3); (10, 9, 8) -> (4, 4); (5, 6, 8) -> (4, 4);
    (4, 4, 5) -> (2, 3). only_first / only_second cut one sequence and raise if it cannot absorb the whole cut.
    Matches `tokenizers` (hence transformers), which also zeroes both sequences when limit == 0.
    """
    second = n2 or 0
    excess = n1 + second - limit
    if excess <= 0:
        return n1, second
    if limit == 0:
        return 0, 0
    if strategy == "longest_first":
        if n2 is None:
            return limit, 0
        if n1 <= n2:
            keep1 = min(n1, limit // 2)
            return keep1, limit - keep1
        keep2 = min(n2, limit // 2)
        return limit - keep2, keep2
    if strategy == "only_second" and n2 is None:
        raise ValueError("truncation='only_second' needs a text_pair")
    cut = n1 if strategy == "only_first" else second
    if cut <= excess:
        raise ValueError(
            f"truncation={strategy!r}: that sequence has {cut} tokens, too few to drop the {excess} over the limit"
        )
    return (n1 - excess, second) if strategy == "only_first" else (n1, second - excess)


def _segments(a: list[int], b: list[int] | None) -> list[int]:
    """token_type_ids without special tokens: A=[7, 8], B=[9] -> [0, 0, 1]."""
    return [0] * len(a) + [1] * len(b or [])


class BatchEncoding(dict):
    """The dict returned by `Tokenizer.__call__`; keys can also be read as attributes (`enc.input_ids`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read a BERT vocab.txt: one token per line, the line number (from 0) is the id.

    "[PAD]\\n[unused0]\\n...\\nthe\\n"  ->  {"[PAD]": 0, "[unused0]": 1, ..., "the": 1996}
    Lines are split like transformers' `load_vocab` (text mode, so \\r\\n and \\r end a line too).
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: vocab file is not valid UTF-8 ({e})") from None
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        token = line.rstrip("\n")
        if token in vocab:
            raise ValueError(f"{path}: token {token!r} appears twice, on lines {vocab[token] + 1} and {i + 1}")
        vocab[token] = i
    if not vocab:
        raise ValueError(f"{path}: vocab file is empty (expected one WordPiece token per line)")
    return vocab


def build_bert_backend(
    vocab: dict[str, int],
    special_tokens: dict[str, str],
    lowercase: bool = True,
    strip_accents: bool | None = None,
    handle_chinese_chars: bool = True,
) -> Backend:
    """Assemble the five-step BERT pipeline (see the module docstring) around a token -> id vocabulary.

    build_bert_backend(read_vocab("vocab.txt"), SPECIAL_TOKEN_DEFAULTS).encode("Héllo, world!").tokens
        ->  ["[CLS]", "hello", ",", "world", "!", "[SEP]"]
    `strip_accents=None` means "strip when lowercasing", as in the original BERT.
    """
    cls, sep = special_tokens["cls_token"], special_tokens["sep_token"]
    # Step 3: the model. 100 characters is BERT's limit above which a whole word becomes [UNK].
    backend = Backend(
        models.WordPiece(
            vocab, unk_token=special_tokens["unk_token"], max_input_chars_per_word=100, continuing_subword_prefix="##"
        )
    )
    # Step 1: clean_text drops control characters and maps all whitespace to " ".
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=handle_chinese_chars, strip_accents=strip_accents, lowercase=lowercase
    )
    # Step 2: whitespace + punctuation splitting.
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Step 4: "$A:0" = first sequence with token_type_id 0; "$B:1" = second sequence with token_type_id 1.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    # Decoding: "##" pieces are glued to the previous token; cleanup removes the space before . , ! ? etc.
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    # Special tokens are matched in the raw text before normalisation ("[CLS]" stays one token, not "[", "cl",
    # "##s", "]") and are the ones `decode(skip_special_tokens=True)` drops.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens.values()])
    return backend


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _token_str(value) -> str:
    """tokenizer_config.json writes a special token as "[CLS]" or as an AddedToken dict {"content": "[CLS]", ...}."""
    return value["content"] if isinstance(value, dict) else str(value)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a BERT tokenizer from a directory holding tokenizer.json and/or vocab.txt, or from either file.

    tokenizer.json (a complete `tokenizers` pipeline) is preferred; from a bare vocab.txt the uncased BERT pipeline
    is built by hand. A tokenizer_config.json beside the file supplies do_lower_case, strip_accents,
    tokenize_chinese_chars, model_max_length, clean_up_tokenization_spaces and the special-token strings.
    """
    path = Path(path)
    if path.is_dir():
        directory = path
        tokenizer_file, vocab_file = path / "tokenizer.json", path / "vocab.txt"
        if not tokenizer_file.is_file():
            tokenizer_file = None
        if not vocab_file.is_file():
            vocab_file = None
        if tokenizer_file is None and vocab_file is None:
            raise FileNotFoundError(f"{path}: no tokenizer.json or vocab.txt in this directory")
    elif path.is_file():
        directory = path.parent
        is_json = path.suffix == ".json"
        tokenizer_file, vocab_file = (path, None) if is_json else (None, path)
    else:
        raise FileNotFoundError(f"{path}: no such file or directory (expected tokenizer.json, vocab.txt or a folder)")

    config_file = directory / "tokenizer_config.json"
    config = _read_json(config_file) if config_file.is_file() else {}
    special = {k: _token_str(config.get(k) or v) for k, v in SPECIAL_TOKEN_DEFAULTS.items()}
    do_lower_case = config.get("do_lower_case", True)
    strip_accents = config.get("strip_accents")
    chinese = config.get("tokenize_chinese_chars", True)

    if tokenizer_file is not None:
        source = tokenizer_file
        try:
            backend = Backend.from_file(str(tokenizer_file))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise ValueError(f"{tokenizer_file}: not a valid tokenizers file ({e})") from None
        # Like BertTokenizerFast: tokenizer_config.json wins over the normaliser stored in tokenizer.json.
        state = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else {}
        if state.get("type") == "BertNormalizer" and (
            state.get("lowercase") != do_lower_case
            or state.get("strip_accents") != strip_accents
            or state.get("handle_chinese_chars") != chinese
        ):
            backend.normalizer = normalizers.BertNormalizer(
                clean_text=state.get("clean_text", True),
                handle_chinese_chars=chinese,
                strip_accents=strip_accents,
                lowercase=do_lower_case,
            )
        clean_up_default = False
    else:
        source = vocab_file
        vocab = read_vocab(vocab_file)
        special = {k: v for k, v in special.items() if k in REQUIRED_SPECIAL_TOKENS or v in vocab}
        for key in REQUIRED_SPECIAL_TOKENS:
            if special[key] not in vocab:
                raise ValueError(f"{vocab_file}: the {key} {special[key]!r} is not in the vocabulary")
        backend = build_bert_backend(vocab, special, do_lower_case, strip_accents, chinese)
        clean_up_default = True  # transformers inherits this from the slow BertTokenizer it converts

    return Tokenizer(
        backend,
        special_tokens=special,
        model_max_length=int(config.get("model_max_length", VERY_LARGE_INTEGER)),
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", clean_up_default)),
        source=source,
    )


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _ids_list(ids) -> list[int]:
    """int, list of ints, or a 0-D/1-D tensor -> list of ints.   torch.tensor([101, 102]) -> [101, 102]"""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    try:
        return [operator.index(i) for i in ids]  # accepts int-like scalars (numpy), rejects floats and strings
    except TypeError:
        raise TypeError(f"expected an int or a sequence of integer ids, got {ids!r:.80}") from None


class Tokenizer:
    """BERT WordPiece tokenizer with the call/decode interface of transformers' BertTokenizerFast.

    tok("Héllo, world!")  ->  {"input_ids": [101, 7592, 1010, 2088, 999, 102], "token_type_ids": [0]*6,
                               "attention_mask": [1]*6}
    """

    def __init__(
        self,
        backend: Backend,
        special_tokens: dict[str, str] = SPECIAL_TOKEN_DEFAULTS,
        model_max_length: int = VERY_LARGE_INTEGER,
        clean_up_tokenization_spaces: bool = False,
        source: Path | None = None,
    ):
        self._backend = backend
        # We truncate and pad ourselves; the backend must not (MiniLM's tokenizer.json turns both on, at 128).
        backend.no_truncation()
        backend.no_padding()
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.source = source  # the file it was loaded from, for error messages
        for key in SPECIAL_TOKEN_DEFAULTS:
            token = special_tokens.get(key)
            token_id = None if token is None else backend.token_to_id(token)
            if token_id is None and key in REQUIRED_SPECIAL_TOKENS:
                raise ValueError(f"{source}: the {key} {token!r} is not in the vocabulary")
            setattr(self, key, None if token_id is None else token)  # e.g. self.pad_token = "[PAD]"
            setattr(self, f"{key}_id", token_id)  # e.g. self.pad_token_id = 0
        # Steps 4-5 are written out in Python (see __call__); check that the stored template is BERT's.
        probe = backend.encode("a", "b")
        a, b = (backend.encode(t, add_special_tokens=False).ids for t in ("a", "b"))
        if (probe.ids, probe.type_ids) != self._add_special_tokens(a, b):
            raise ValueError(f"{source}: post-processor is not BERT's '[CLS] A [SEP] B [SEP]' template")
        # Like transformers: every special token is an added token, matched before normalisation, skippable in decode.
        added = {t.content for t in backend.get_added_tokens_decoder().values()}
        missing = [getattr(self, k) for k in SPECIAL_TOKEN_DEFAULTS if getattr(self, k) not in (None, *added)]
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Tokenizer:
        """Same as `load_tokenizer(path)`."""
        return load_tokenizer(path)

    @property
    def backend_tokenizer(self) -> Backend:
        """The underlying `tokenizers.Tokenizer` (normaliser, pre-tokeniser, WordPiece, post-processor, decoder)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the WordPiece vocabulary (30522 for bert-base-uncased and MiniLM), added tokens excluded."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"lowercase={self.do_lower_case}, source={str(self.source)!r})"
        )

    @property
    def do_lower_case(self) -> bool:
        state = json.loads(self._backend.normalizer.__getstate__()) if self._backend.normalizer else {}
        return bool(state.get("lowercase", False))

    # ---------------------------------------------------------------------------------------------- encoding
    def tokenize(self, text: str) -> list[str]:
        """Steps 1-3 only: "Héllo, tokenization!" -> ["hello", ",", "token", "##ization", "!"] (no [CLS]/[SEP])."""
        return self._backend.encode(text, add_special_tokens=False).tokens

    def __call__(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> BatchEncoding:
        """Encode one text, a batch of texts, or (batches of) pairs into input_ids, token_type_ids, attention_mask.

        padding:    False (none) | True or "longest" (to the longest in the batch) | "max_length".
        truncation: None | False | True or "longest_first" | "only_first" | "only_second"; `max_length` counts the
                    special tokens. As in transformers, `max_length` with padding=False and truncation=None truncates,
                    and a missing `max_length` falls back to `model_max_length`.
        A single text gives flat lists, a batch lists of lists; return_tensors="pt" gives (B, L) LongTensors.
            tok(["a b", "a"], padding=True)["input_ids"]  ->  [[101, 1037, 1038, 102], [101, 1037, 102, 0]]
        """
        single = isinstance(text, str)
        texts = [text] if single else text
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"text must be a str or a list of str, got {text!r:.80}")
        pairs = None
        if text_pair is not None:
            pairs = [text_pair] if single else text_pair
            if (isinstance(text_pair, str) != single) or not isinstance(pairs, (list, tuple)):
                raise TypeError("text and text_pair must both be a str, or both a list of str")
            if not all(isinstance(t, str) for t in pairs):
                raise TypeError(f"text_pair must be a str or a list of str, got {text_pair!r:.80}")
            if len(pairs) != len(texts):
                raise ValueError(f"text has {len(texts)} entries but text_pair has {len(pairs)}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        padding, truncation, max_length = self._resolve_lengths(padding, truncation, max_length)

        # Steps 1-3 in Rust, one call for the whole batch: text -> WordPiece ids, no special tokens yet.
        pieces = [e.ids for e in self._backend.encode_batch([*texts, *(pairs or [])], add_special_tokens=False)]
        firsts, seconds = pieces[: len(texts)], (pieces[len(texts) :] if pairs is not None else [None] * len(texts))
        n_special = (3 if pairs is not None else 2) if add_special_tokens else 0  # [CLS] A [SEP] (B [SEP])
        rows = []
        for a, b in zip(firsts, seconds, strict=True):
            # Step 5a: truncate the pieces so that pieces + special tokens fit in max_length.
            if truncation:
                if max_length < n_special:
                    raise ValueError(f"max_length={max_length} cannot hold the {n_special} special tokens")
                n_b = None if b is None else len(b)
                keep_a, keep_b = truncation_lengths(len(a), n_b, max_length - n_special, truncation)
                a, b = a[:keep_a], (None if b is None else b[:keep_b])
            # Step 4: special tokens and segment ids.
            rows.append(self._add_special_tokens(a, b) if add_special_tokens else (a + (b or []), _segments(a, b)))

        # Step 5b: pad on the right to the longest row (or to max_length); pads get attention_mask 0.
        width = max((len(ids) for ids, _ in rows), default=0)
        if padding == "max_length":
            width = max_length  # a longer row (truncation off) stays longer, as in transformers
        out = BatchEncoding(input_ids=[], token_type_ids=[], attention_mask=[])
        for ids, types in rows:
            n_pad = max(width - len(ids), 0) if padding else 0
            out["input_ids"].append(ids + [self.pad_token_id] * n_pad)
            out["token_type_ids"].append(types + [0] * n_pad)
            out["attention_mask"].append([1] * len(ids) + [0] * n_pad)
        if return_tensors == "pt":
            lengths = sorted({len(row) for row in out["input_ids"]})
            if len(lengths) > 1:
                raise ValueError(
                    f"cannot stack sequences of lengths {lengths} into one tensor; pass padding=True "
                    "(or padding='max_length' with max_length)"
                )
            width = lengths[0] if lengths else 0
            return BatchEncoding({k: torch.tensor(v, dtype=torch.long).view(len(v), width) for k, v in out.items()})
        if single:
            return BatchEncoding({k: v[0] for k, v in out.items()})
        return out

    def _add_special_tokens(self, a: list[int], b: list[int] | None) -> tuple[list[int], list[int]]:
        """BERT's template: A=[7592] -> [CLS] A [SEP] = [101, 7592, 102], segments [0, 0, 0];
        A=[7592], B=[2088] -> [CLS] A [SEP] B [SEP] = [101, 7592, 102, 2088, 102], segments [0, 0, 0, 1, 1]."""
        cls, sep = self.cls_token_id, self.sep_token_id
        if b is None:
            return [cls, *a, sep], [0] * (len(a) + 2)
        return [cls, *a, sep, *b, sep], [0] * (len(a) + 2) + [1] * (len(b) + 1)

    def _resolve_lengths(self, padding, truncation, max_length) -> tuple[str | None, str | None, int | None]:
        """transformers' rules -> (padding "longest"|"max_length"|None, truncation strategy|None, max_length).

        (False, None, 8) -> (None, "longest_first", 8)       max_length alone switches truncation on
        (True, True, None) -> ("longest", "longest_first", model_max_length)
        """
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = True
        paddings = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
        if padding not in paddings:
            raise ValueError(f"padding must be one of {list(paddings)}, got {padding!r}")
        padding = paddings[padding]
        if truncation in (None, False, "do_not_truncate"):
            truncation = None
        elif truncation is True:
            truncation = "longest_first"
        elif truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation must be a bool or one of {TRUNCATION_STRATEGIES}, got {truncation!r}")
        if max_length is None:
            known = self.model_max_length < VERY_LARGE_INTEGER  # else: no limit known -> skip, like transformers
            if padding == "max_length":
                padding, max_length = ("max_length", self.model_max_length) if known else (None, None)
            if truncation:
                truncation, max_length = (truncation, self.model_max_length) if known else (None, None)
        return padding, truncation, max_length

    # ---------------------------------------------------------------------------------------------- decoding
    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """ids -> text: [101, 19204, 3989, 999, 102] -> "[CLS] tokenization! [SEP]" ("tokenization!" when skipping).

        `clean_up_tokenization_spaces` (default: the tokenizer's setting) also rewrites " ' " -> "'", " 's" -> "'s",
        " n't" -> "n't" ...: "it ' s" -> "it's".
        """
        text = self._backend.decode(_ids_list(ids), skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            for old, new in CLEANUP_REPLACEMENTS:
                text = text.replace(old, new)
        return text

    def batch_decode(
        self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        """A list of id lists, or a (B, L) tensor -> B strings (padding is dropped with skip_special_tokens=True)."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """101 -> "[CLS]";  [101, 19204, 3989] -> ["[CLS]", "token", "##ization"]."""
        if isinstance(ids, int):
            return self._id_to_token(ids)
        special_ids = {i for i, t in self._backend.get_added_tokens_decoder().items() if t.special}
        return [self._id_to_token(i) for i in _ids_list(ids) if not (skip_special_tokens and i in special_ids)]

    def _id_to_token(self, i: int) -> str:
        token = self._backend.id_to_token(i)
        if token is None:
            raise ValueError(f"id {i} is outside the vocabulary (0 .. {len(self) - 1})")
        return token

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Token(s) -> id(s), unknown ones -> unk_token_id.

        "[CLS]" -> 101;  ["token", "##ization", "not-a-token"] -> [19204, 3989, 100]
        """
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    # ---------------------------------------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write tokenizer.json, vocab.txt and tokenizer_config.json (each atomically) into `directory`.

        The folder loads back with `load_tokenizer` and with transformers' BertTokenizerFast / AutoTokenizer.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = self._backend.get_vocab(with_added_tokens=False)
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ValueError("vocabulary ids are not 0..N-1 without gaps; cannot write vocab.txt")
        normalizer = json.loads(self._backend.normalizer.__getstate__()) if self._backend.normalizer else {}
        config = {
            "tokenizer_class": "BertTokenizer",  # AutoTokenizer maps this to BertTokenizerFast
            "do_lower_case": self.do_lower_case,
            "strip_accents": normalizer.get("strip_accents"),
            "tokenize_chinese_chars": normalizer.get("handle_chinese_chars", True),
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            **{key: getattr(self, key) for key in SPECIAL_TOKEN_DEFAULTS if getattr(self, key) is not None},
        }
        files = {
            "tokenizer.json": self._backend.to_str(pretty=True),
            "vocab.txt": "".join(token + "\n" for token, _ in by_id),
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
        }
        for name, text in files.items():
            _atomic_write(directory / name, text)
        return [directory / name for name in files]

    save = save_pretrained
