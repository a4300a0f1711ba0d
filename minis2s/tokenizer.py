"""BERT's WordPiece tokenizer: the `tokenizers` library's own parts behind transformers' BertTokenizerFast interface.

`tokenizers` does the work; this file adds transformers' argument rules, files and defaults. Steps and departures:
docs/tokenizer.md. References: Devlin et al. 2018, BERT (arXiv 1810.04805) §3; Wu et al. 2016 (arXiv 1609.08144).
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import torch
from tokenizers import AddedToken, Encoding, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from .files import read_json, write_json, write_text

VERY_LARGE_INTEGER = int(1e30)  # transformers' "no known maximum length"
SPECIAL_TOKEN_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                          "mask_token": "[MASK]"}  # tokenizer_config.json may rename them; only [MASK] is optional
REQUIRED_SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token")
PADDINGS = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
STRATEGIES = ("longest_first", "only_first", "only_second")
TRUNCATIONS = {None: None, False: None, "do_not_truncate": None, True: "longest_first", **{s: s for s in STRATEGIES}}
# transformers' clean_up_tokenization, in this order, over the whole text (the decoder, token by token, cannot).
CLEANUP_REPLACEMENTS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class BatchEncoding(dict):
    """What `Tokenizer.__call__` returns: a dict whose keys read as attributes too (`enc.input_ids`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """vocab.txt, one token a line, id = line number: "[PAD]\\n[unused0]\\n..." -> {"[PAD]": 0, "[unused0]": 1, ...}"""
    try:
        text = Path(path).read_text(encoding="utf-8")  # text mode: "\r\n" and "\r" end a line too, as in transformers
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: vocab file is not valid UTF-8 ({e})") from None
    vocab: dict[str, int] = {}
    for i, token in enumerate(text.removesuffix("\n").split("\n") if text else []):
        if vocab.setdefault(token, i) != i:
            raise ValueError(f"{path}: token {token!r} appears twice, on lines {vocab[token] + 1} and {i + 1}")
    if not vocab:
        raise ValueError(f"{path}: vocab file is empty (expected one WordPiece token per line)")
    return vocab


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """From a folder with tokenizer.json (preferred) or vocab.txt, or either file; and tokenizer_config.json beside."""
    path = Path(path)
    files = [path] if path.is_file() else [f for f in (path / "tokenizer.json", path / "vocab.txt") if f.is_file()]
    if not files:
        raise FileNotFoundError(f"{path}: no tokenizer.json or vocab.txt in this directory" if path.is_dir() else
                                f"{path}: no such file or directory (expected tokenizer.json, vocab.txt or a folder)")
    file, config_file = files[0], files[0].parent / "tokenizer_config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    special = {k: config.get(k) or default for k, default in SPECIAL_TOKEN_DEFAULTS.items()}
    special = {k: v["content"] if isinstance(v, dict) else str(v) for k, v in special.items()}  # or AddedToken dicts
    # BertNormalizer's settings; strip_accents None means "as lowercase", BERT's own choice.
    bert = {"lowercase": config.get("do_lower_case", True), "strip_accents": config.get("strip_accents"),
            "handle_chinese_chars": config.get("tokenize_chinese_chars", True)}
    if file.suffix == ".json":
        try:
            backend = Backend.from_file(str(file))
        except Exception as e:  # tokenizers raises a bare Exception
            raise ValueError(f"{file}: not a valid tokenizers file ({e})") from None
        norm = backend.normalizer  # tokenizer_config.json wins over tokenizer.json, as in BertTokenizerFast
        if isinstance(norm, normalizers.BertNormalizer) and any(getattr(norm, k) != v for k, v in bert.items()):
            backend.normalizer = normalizers.BertNormalizer(clean_text=norm.clean_text, **bert)
    else:
        vocab, cls, sep = read_vocab(file), special["cls_token"], special["sep_token"]
        if missing := [key for key in REQUIRED_SPECIAL_TOKENS if special[key] not in vocab]:  # [MASK] may be absent
            raise ValueError(f"{file}: the {missing[0]} {special[missing[0]]!r} is not in the vocabulary")
        backend = Backend(models.WordPiece(vocab, unk_token=special["unk_token"], max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(clean_text=True, **bert)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.post_processor = processors.TemplateProcessing(  # "$B:1": the second text, with segment id 1
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
        backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    clean_up = config.get("clean_up_tokenization_spaces", file.suffix != ".json")  # vocab.txt: on, as transformers 4
    return Tokenizer(backend, special, int(config.get("model_max_length", VERY_LARGE_INTEGER)), bool(clean_up), file)


def _word_prefix(text: str, enc: Encoding, i: int) -> tuple[str, int]:
    """The start of `text` up to the end of the word holding piece i, and how many pieces it has (each word becomes
    pieces on its own, so they are `enc`'s first ones): ("hello tokenization", i=1) -> ("hello tokenization", 3)."""
    word = enc.token_to_word(i)
    return text[: enc.word_to_chars(word)[1]], enc.word_to_tokens(word)[1]


def _ids_list(ids) -> list[int]:
    """An int, a list of ints or a 0-D/1-D tensor -> a list of ints: torch.tensor([101, 102]) -> [101, 102]."""
    ids = ids.tolist() if hasattr(ids, "tolist") else ids
    try:
        return [operator.index(i) for i in ([ids] if isinstance(ids, int) else ids)]  # numpy ints pass, floats not
    except TypeError:
        raise TypeError(f"expected an int or a sequence of integer ids, got {ids!r:.80}") from None


class Tokenizer:
    """BERT's WordPiece tokenizer with the call/decode interface of transformers' BertTokenizerFast:
    tok("Héllo, world!") -> {"input_ids": [101, 7592, 1010, 2088, 999, 102], "token_type_ids": ..., ...}."""

    def __init__(self, backend: Backend, special_tokens: dict[str, str] = SPECIAL_TOKEN_DEFAULTS,
                 model_max_length: int = VERY_LARGE_INTEGER, clean_up_tokenization_spaces: bool = False,
                 source: Path | None = None):
        self.backend_tokenizer, self.model_max_length, self.source = backend, model_max_length, source
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        backend.no_truncation()  # each call sets its own (MiniLM's tokenizer.json stores both, at 128)
        backend.no_padding()
        for key in SPECIAL_TOKEN_DEFAULTS:
            token_id = None if (token := special_tokens.get(key)) is None else backend.token_to_id(token)
            if token_id is None and key in REQUIRED_SPECIAL_TOKENS:
                raise ValueError(f"{source}: the {key} {token!r} is not in the vocabulary")
            setattr(self, key, None if token_id is None else token)  # self.pad_token = "[PAD]"
            setattr(self, f"{key}_id", token_id)  # self.pad_token_id = 0
        # The models expect BERT's layout, so a tokenizer.json with another template is refused.
        (a, b), probe = backend.encode("a b", add_special_tokens=False).ids, backend.encode("a", "b")
        if (probe.ids, probe.type_ids) != ([self.cls_token_id, a, self.sep_token_id, b, self.sep_token_id],
                                           [0, 0, 0, 1, 1]):
            raise ValueError(f"{source}: post-processor is not BERT's '[CLS] A [SEP] B [SEP]' template")
        # Special tokens are added tokens, as in transformers: matched in the raw text before normalising ("[CLS]"
        # stays one token, not "[", "cl", "##s", "]") and dropped by decode(skip_special_tokens=True).
        added = {t.content for t in backend.get_added_tokens_decoder().values()}
        backend.add_special_tokens([AddedToken(getattr(self, k), special=True, normalized=False)
                                    for k in SPECIAL_TOKEN_DEFAULTS if getattr(self, k) not in (None, *added)])

    from_pretrained = staticmethod(load_tokenizer)

    @property
    def vocab_size(self) -> int:  # the WordPiece vocabulary (30522 for bert-base-uncased), added tokens excluded
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def do_lower_case(self) -> bool:  # BertNormalizer's setting; False with any other normaliser, or none
        return bool(getattr(self.backend_tokenizer.normalizer, "lowercase", False))

    def tokenize(self, text: str) -> list[str]:
        """Pieces without [CLS], [SEP]: "Héllo, tokenization!" -> ["hello", ",", "token", "##ization", "!"]."""
        return self.backend_tokenizer.encode(text, add_special_tokens=False).tokens

    def __call__(self, text: str | list[str], text_pair: str | list[str] | None = None, padding: bool | str = False,
                 truncation: bool | str | None = None, max_length: int | None = None,
                 return_tensors: str | None = None, add_special_tokens: bool = True) -> BatchEncoding:
        """A text, a batch or (batches of) pairs -> input_ids, token_type_ids, attention_mask (lists, or LongTensors):
        tok(["a b", "a"], padding=True)["input_ids"] -> [[101, 1037, 1038, 102], [101, 1037, 102, 0]]"""
        single = isinstance(text, str)
        texts, pairs = ([text], None if text_pair is None else [text_pair]) if single else (text, text_pair)
        strings = lambda v: isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v)  # noqa: E731
        if not strings(texts):
            raise TypeError(f"text must be a str or a list of str, got {text!r:.80}")
        if pairs is not None and not strings(pairs):
            raise TypeError(f"text and text_pair must both be a str, or both a list of str, got {text_pair!r:.80}")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"text has {len(texts)} entries but text_pair has {len(pairs)}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be a bool or one of {STRATEGIES}, got {truncation!r}")
        # transformers' rules (docs/tokenizer.md): max_length alone turns truncation on; None is model_max_length.
        truncation = True if max_length is not None and padding is False and truncation is None else truncation
        padding, truncation = PADDINGS[padding], TRUNCATIONS[truncation]
        if max_length is None and self.model_max_length >= VERY_LARGE_INTEGER:  # no known limit: no truncation,
            padding, truncation = (None if padding == "max_length" else padding), None  # nor padding to max_length
        max_length = self.model_max_length if max_length is None else max_length
        n_special = (2 if pairs is None else 3) if add_special_tokens else 0  # [CLS] A [SEP] (B [SEP])
        if truncation and max_length < n_special:
            raise ValueError(f"max_length={max_length} cannot hold the {n_special} special tokens")
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        if truncation == "longest_first" and pairs is not None:
            inputs = self._shorten_long_pairs(inputs, max_length)
        backend = self.backend_tokenizer
        try:
            if truncation:
                backend.enable_truncation(max_length, strategy=truncation)
            if padding:  # length None: the longest in the batch
                backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token,
                                       length=max_length if padding == "max_length" else None)
            encodings = backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as e:  # tokenizers' bare Exception, e.g. only_first when the first text is too short
            raise ValueError(f"truncation={truncation!r}, max_length={max_length}: {e}") from None
        finally:  # settings never leak into the next call, nor into a saved tokenizer.json
            backend.no_truncation()
            backend.no_padding()
        out = BatchEncoding(input_ids=[e.ids for e in encodings], token_type_ids=[e.type_ids for e in encodings],
                            attention_mask=[e.attention_mask for e in encodings])
        if return_tensors == "pt":
            if len(lengths := sorted({len(ids) for ids in out["input_ids"]})) > 1:
                raise ValueError(f"cannot stack sequences of lengths {lengths} into one tensor; pass padding=True "
                                 "(or padding='max_length' with max_length)")
            shape = (len(encodings), lengths[0] if lengths else 0)
            return BatchEncoding({k: torch.tensor(v, dtype=torch.long).view(shape) for k, v in out.items()})
        return BatchEncoding({k: v[0] for k, v in out.items()}) if single else out

    def _shorten_long_pairs(self, pairs: list[tuple[str, str]], max_length: int) -> list[tuple[str, str]]:
        """Cut pairs over max_length pieces in both texts to whole words, as longest_first would (docs/tokenizer.md)."""
        encs = self.backend_tokenizer.encode_batch([t for pair in pairs for t in pair], add_special_tokens=False)
        out = []
        for (a, b), ea, eb in zip(pairs, encs[0::2], encs[1::2]):
            if min(len(ea), len(eb)) > max_length and len(ea) <= len(eb):
                a, n = _word_prefix(a, ea, max_length)
                b, _ = _word_prefix(b, eb, n - 1)  # b keeps at least the n pieces a keeps
            elif min(len(ea), len(eb)) > max_length:
                b, n = _word_prefix(b, eb, max_length)
                a, _ = _word_prefix(a, ea, n)  # a keeps more than the n pieces b keeps
            out.append((a, b))
        return out

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """[101, 19204, 3989, 999, 102] -> "[CLS] tokenization! [SEP]" ("tokenization!" skipping special tokens)."""
        return self.batch_decode([ids], skip_special_tokens, clean_up_tokenization_spaces)[0]

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """A list of id lists, or a (B, L) tensor -> B strings."""
        sequences = sequences.tolist() if hasattr(sequences, "tolist") else sequences
        texts = self.backend_tokenizer.decode_batch([_ids_list(s) for s in sequences], skip_special_tokens)
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            for old, new in CLEANUP_REPLACEMENTS:
                texts = [t.replace(old, new) for t in texts]
        return texts

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """101 -> "[CLS]";  [101, 19204, 3989] -> ["[CLS]", "token", "##ization"]."""
        added = self.backend_tokenizer.get_added_tokens_decoder()
        kept = [i for i in _ids_list(ids) if not (skip_special_tokens and i in added and added[i].special)]
        tokens = [self.backend_tokenizer.id_to_token(i) for i in kept]
        if None in tokens:
            raise ValueError(f"id {kept[tokens.index(None)]} is outside the vocabulary (0 .. {len(self) - 1})")
        return tokens[0] if isinstance(ids, int) else tokens

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """"[CLS]" -> 101;  ["token", "##ization", "not-a-token"] -> [19204, 3989, 100] (unknown: unk_token_id)."""
        ids = [self.backend_tokenizer.token_to_id(t) for t in ([tokens] if isinstance(tokens, str) else tokens)]
        ids = [self.unk_token_id if i is None else i for i in ids]
        return ids[0] if isinstance(tokens, str) else ids

    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json, each atomically: a folder transformers loads too."""
        (directory := Path(directory)).mkdir(parents=True, exist_ok=True)
        vocab = sorted(self.backend_tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise ValueError(f"{self.source}: vocabulary ids are not 0..N-1 without gaps; cannot write vocab.txt")
        norm = self.backend_tokenizer.normalizer
        config = dict(tokenizer_class="BertTokenizer",  # AutoTokenizer maps it to BertTokenizerFast
                      do_lower_case=self.do_lower_case, strip_accents=getattr(norm, "strip_accents", None),
                      tokenize_chinese_chars=getattr(norm, "handle_chinese_chars", True),
                      model_max_length=self.model_max_length,
                      clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
                      **{k: getattr(self, k) for k in SPECIAL_TOKEN_DEFAULTS if getattr(self, k) is not None})
        paths = [directory / name for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")]
        write_text(paths[0], self.backend_tokenizer.to_str(pretty=True))
        write_text(paths[1], "".join(token + "\n" for token, _ in vocab))
        write_json(paths[2], config)
        return paths

    save = save_pretrained
