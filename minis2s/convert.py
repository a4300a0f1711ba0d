"""Converting checkpoints: published BERT files and transformers' EncoderDecoderModel directories <-> minis2s.

    warm_start(enc_dir, dec_dir)   BERT checkpoint(s) -> a BERT2BERT, as from_encoder_decoder_pretrained builds it
    from_hf(src_dir)               a transformers EncoderDecoderModel directory -> minis2s, every weight kept
    to_hf(model, out_dir)          minis2s -> a directory transformers' EncoderDecoderModel.from_pretrained loads
    load_minis2s, save_minis2s     minis2s's own checkpoint directory

Keys are renamed by checkpoint.py's table; tensors are read one at a time, a `.bin` only with weights_only=True.
Layouts: docs/checkpoints.md. CLI: weights_convert.py. Warm-starting, BERTShare: Rothe et al. 2020 (arXiv 1907.12461).
"""

from __future__ import annotations

import pickle
import re
import shutil
import zipfile
from collections import defaultdict, namedtuple
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

import torch
from safetensors import safe_open

from .checkpoint import check_state, from_hf_name, to_hf_name, unique_state
from .config import BertConfig, EncoderDecoderConfig, decoder_config_from
from .files import atomic_directory, read_json, write_json, write_safetensors
from .model import Bert2Bert, init_weights

# Weight files a checkpoint directory may hold, in the order they are preferred (transformers prefers safetensors).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# TF-era LayerNorm names (bert-base-uncased's pytorch_model.bin) -> today's, read as transformers reads them; and the
# prefix under which BertForPreTraining / BertForMaskedLM / BertLMHeadModel keep their BertModel.
LEGACY_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
BASE_PREFIX = "bert."

# Where a key sits in transformers' EncoderDecoderModel, by role: (key starts with, prefix to add); the first
# matching row wins; None: no place in that role (an encoder has no MLM head); "model": keys already in place.
ROLE_PREFIXES = {"encoder": [("cls.", None), ("", "encoder.")],
                 "decoder": [("cls.", "decoder."), ("", "decoder.bert.")], "model": [("", "")]}

# Tied copies (transformers key -> the key it repeats): the LM head's projection IS the decoder's word embeddings,
# its bias IS cls.predictions.bias, and older files store both twice. A copy is compared, never loaded.
TIED_COPIES = {"decoder.cls.predictions.decoder.weight": "decoder.bert.embeddings.word_embeddings.weight",
               "decoder.cls.predictions.decoder.bias": "decoder.cls.predictions.bias"}

# Source keys a BERT2BERT never uses: (regex searched in the key, why).
IGNORED_KEYS = [(r"(^|\.)position_ids$", "buffer of position indices (minis2s computes them)"),
                (r"(^|\.)cls\.seq_relationship\.", "next-sentence-prediction head (BERT pre-training only)")]

# Tensors a warm start may create when the checkpoint lacks them: (regex whose group `g` must be absent as a whole,
# what it is). Anything else missing is an error, never a silent random init.
WARM_START_NEW = [
    (r"^(?P<g>decoder\.layers\.\d+\.)(cross_attn|cross_ln)\.", "cross-attention (a BERT checkpoint has none)"),
    (r"^(?P<g>lm_head\.)(dense|ln)\.", "LM-head transform (the decoder checkpoint has no MLM head)"),
    (r"^(?P<g>lm_head\.bias)$", "LM bias (the decoder checkpoint has no cls.predictions.bias)"),
    (r"^(?P<g>encoder\.pooler\.)", "pooler (absent from the encoder checkpoint; a seq2seq model never calls it)"),
]

# Special tokens, found in the vocabulary by their strings: config field -> (tokenizer field, BERT's string).
SPECIAL_TOKENS = {"decoder_start_token_id": ("cls_token", "[CLS]"), "pad_token_id": ("pad_token", "[PAD]"),
                  "eos_token_id": ("sep_token", "[SEP]")}


# -- The report: what happened to every source key and every model tensor --------------------------------------------
@dataclass
class SourceReport:
    """One checkpoint directory read: which of its keys filled which minis2s tensors, and why the rest did not."""

    path: str
    files: list[str]  # the weight files read, in order
    used: dict[str, list[str]] = field(default_factory=dict)  # source key -> minis2s keys it filled
    ignored: dict[str, str] = field(default_factory=dict)  # source key -> why it filled nothing


@dataclass
class ConversionReport:
    """Each source key is used or ignored, each model tensor loaded or new; printed, similar keys are merged."""

    sources: list[SourceReport] = field(default_factory=list)
    new: dict[str, str] = field(default_factory=dict)  # minis2s key -> what it is (initialised here)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = []
        for s in self.sources:
            lines.append(f"{s.path} ({', '.join(s.files)}): {len(s.used) + len(s.ignored)} tensors, "
                         f"{len(s.used)} used, {len(s.ignored)} ignored")
            lines += [f"  {row[0]} -> {', '.join(row[1:])}" for row in _compress([(k, *v) for k, v in s.used.items()])]
            lines += [f"  ignored {keys}: {why}" for why, keys in _by_reason(s.ignored)]
        if self.new:
            lines.append(f"new {len(self.new)} tensors (N(0, initializer_range) weights, zero biases, LayerNorm 1/0):")
            lines += [f"  {keys}: {what}" for what, keys in _by_reason(self.new)]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


# The parts of a key that the report merges, in turn: the layer number, the last part, the part before it.
MERGED_PARTS = [r"\.(\d+)\.", r"\.([^.]+)$", r"\.([^.]+)\.[^.]+$"]


def _compress(rows: list[tuple]) -> list[tuple]:
    """Merge rows of keys that differ only in one part, the same part in every key of a row:
    [("l.0.q.weight", "x.0.weight"), ("l.1.q.weight", "x.1.weight"), ("l.0.q.bias", "x.0.bias"), ...]
    -> [("l.{0-1}.q.{weight,bias}", "x.{0-1}.{weight,bias}")]"""
    for pattern in MERGED_PARTS:
        merged = {}  # the row with the part replaced by "{}" -> the parts seen (None: a row kept as it is)
        for row in rows:
            found = [re.search(pattern, k) for k in row]
            if all(found) and len({m.group(1) for m in found}) == 1:
                stem = tuple(k[:m.start(1)] + "{}" + k[m.end(1):] for k, m in zip(row, found))
                merged.setdefault(stem, []).append(found[0].group(1))
            else:
                merged[row] = None
        rows = [row if parts is None else tuple(k.replace("{}", _braces(parts)) for k in row)
                for row, parts in merged.items()]
    return rows


def _braces(parts: list[str]) -> str:
    """["weight", "bias"] -> "{weight,bias}";  ["0", "1", "2", "5"] -> "{0-2,5}";  ["query"] -> "query"."""
    if len(parts) == 1:
        return parts[0]
    if all(p.isdigit() for p in parts):
        numbered = enumerate(sorted(set(map(int, parts))))  # along a run of consecutive numbers, n - index is constant
        runs = [[n for _, n in run] for _, run in groupby(numbered, lambda t: t[1] - t[0])]
        parts = [f"{run[0]}" if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs]
    return "{" + ",".join(parts) + "}"


def _by_reason(reasons: dict[str, str]) -> list[tuple[str, str]]:
    """{key: reason} -> [(reason, its keys, merged)]."""
    keys = defaultdict(list)
    for k, why in reasons.items():
        keys[why].append((k,))
    return [(why, ", ".join(row[0] for row in _compress(rows))) for why, rows in keys.items()]


# -- Reading weight files lazily -------------------------------------------------------------------------------------
class WeightFiles:
    """A checkpoint directory's tensors (a file or shards): keys and `shapes` first, then tensors one file at a time."""

    def __init__(self, directory):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir} is not a directory")
        if (name := next((n for n in WEIGHT_FILES if (self.dir / n).is_file()), None)) is None:
            raise FileNotFoundError(f"{self.dir} holds no weights: none of {', '.join(WEIGHT_FILES)}")
        self.files, index, where = [self.dir / name], {}, self.dir / name  # index: key -> shard file
        if name.endswith(".index.json"):
            try:
                index = read_json(where)["weight_map"]
                self.files = [self.dir / n for n in dict.fromkeys(index.values())]  # in order of first mention
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{where} is not a valid shard index (JSON with a 'weight_map'): {e!r}") from e
            if lost := next((path for path in self.files if not path.is_file()), None):
                raise FileNotFoundError(f"{where} names shard {lost.name}, which is not in {self.dir}")
        self.shapes, self._where, self._open = {}, {}, None  # _open: (path, the one open file)
        for path in self.files:
            for key, shape in self._use(path).shapes.items():
                if key in self._where:
                    raise ValueError(f"{key} is stored twice: in {self._where[key].name} and {path.name}")
                self._where[key], self.shapes[key] = path, shape
        if absent := [k for k in index if k not in self._where]:
            raise ValueError(f"{where} lists {len(absent)} tensor(s) its shards lack, e.g. {absent[0]} in "
                             f"{index[absent[0]]}")

    def _use(self, path: Path):  # the open file `path`, opened (after closing the one open before) if need be
        if self._open is None or self._open[0] != path:
            self.close()
            self._open = (path, WeightFile(path))
        return self._open[1]

    def keys(self) -> list[str]:
        """Every key, file by file: reading in this order visits each shard once."""
        return list(self._where)

    def get(self, key: str) -> torch.Tensor:
        return self._use(self._where[key]).get(key)

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


class WeightFile:
    """One weights file: `shapes` at once, tensors on demand; a .bin only through torch.load(weights_only=True)."""

    def __init__(self, path: Path):
        self.path = path
        if path.suffix == ".safetensors":
            try:
                self.f = safe_open(str(path), framework="pt")
            except Exception as e:  # SafetensorError is not exported under one stable name across versions
                raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
            self.shapes = {k: tuple(self.f.get_slice(k).get_shape()) for k in self.f.keys()}
            return
        try:  # weights_only refuses anything but tensors and plain containers before it is built: no code runs
            self.f = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as e:
            found = re.search(r"(Unsupported global|Unsupported operand)[^\n]*", str(e))
            raise ValueError(f"{path} was refused: it is not a plain tensor checkpoint, loading it would run or build "
                             f"arbitrary objects ({found.group(0) if found else type(e).__name__}). "
                             "Only torch.load(weights_only=True) is ever used here.") from None
        except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
        if not isinstance(self.f, dict):
            raise ValueError(f"{path} holds a {type(self.f).__name__}, not a dict of tensors")
        if bad := [k for k, v in self.f.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]:
            raise ValueError(f"{path}: entry {bad[0]!r} is not a tensor with a string key ({len(bad)} such entries)")
        self.shapes = {k: tuple(v.shape) for k, v in self.f.items()}

    def get(self, key: str) -> torch.Tensor:
        if isinstance(self.f, dict):
            return self.f[key]
        try:
            return self.f.get_tensor(key)
        except Exception as e:
            raise ValueError(f"{self.path}: cannot read tensor {key} (truncated or corrupt?): {e}") from e

    def close(self) -> None:
        self.f = None


def is_hf_layout(model_dir) -> bool:
    """True when `model_dir` holds a transformers EncoderDecoderModel (keys `decoder.bert.*`), not a minis2s one."""
    try:
        files = WeightFiles(model_dir)
    except (OSError, ValueError):
        return False
    files.close()
    return any(k.startswith("decoder.bert.") for k in files.keys())


# -- Filling a model from sources ------------------------------------------------------------------------------------
# One source key mapped: index of its reader, the key, the minis2s name it fills, whether it is a tied copy.
Entry = namedtuple("Entry", "source key name copy")


def _skeleton(config: EncoderDecoderConfig, model_cls, attn_implementation: str | None) -> Bert2Bert:
    """`model_cls(config)`, eval mode, storage uninitialised: built on meta (250M random numbers would take seconds)."""
    if attn_implementation is not None:
        config.encoder.attn_implementation = config.decoder.attn_implementation = attn_implementation
    with torch.device("meta"):
        return model_cls(config).to_empty(device="cpu").eval()


def _map_key(key: str, prefix: str | None, params: dict) -> tuple[str | None, bool, str | None]:
    """A source key -> (minis2s name, is it a tied copy, None) or (None, False, why it fills nothing). `prefix` puts
    the key where transformers' EncoderDecoderModel holds it (None: it has no place in this role)."""
    why = next((why for pattern, why in IGNORED_KEYS if re.search(pattern, key)), None)
    if why or prefix is None:
        return None, False, why or "MLM head: only a decoder has one (this checkpoint warm-starts the encoder)"
    key = next((key.removesuffix(old) + new for old, new in LEGACY_NAMES.items() if key.endswith(old)), key)
    if prefix + key in TIED_COPIES:
        return from_hf_name(TIED_COPIES[prefix + key]), True, None
    if (name := from_hf_name(prefix + key)) is None:
        return None, False, "not part of a BERT2BERT (no row in the name table)"
    if name not in params:
        return None, False, ("the decoder (BertLMHeadModel) has no pooler" if name.startswith("decoder.pooler")
                             else f"{name} does not exist in this model")
    return name, False, None


def _entries(readers: list[WeightFiles], roles: list[tuple], params: dict, skip_shared: bool) -> tuple[list, dict]:
    """Map every key of `readers[s]` for each of its `roles[s]` (ROLE_PREFIXES): ([Entry], {(s, key): why unused}).
    `skip_shared` (a BERTShare warm start): the encoder's keys fill the shared tensors, the decoder's are unused."""
    encoder = {id(p) for n, p in params.items() if n.startswith("encoder.")}
    entries, skipped = [], {}
    for s, (reader, rs) in enumerate(zip(readers, roles)):
        for key in reader.keys():
            bare = key.removeprefix(BASE_PREFIX)
            for role in rs:
                name, copy, why = _map_key(bare, next(p for start, p in ROLE_PREFIXES[role] if bare.startswith(start)),
                                           params)
                if skip_shared and name and name.startswith("decoder.") and id(params[name]) in encoder and not copy:
                    name, why = None, "BERTShare: the decoder uses the encoder's tensor"
                if name is None:
                    skipped.setdefault((s, key), why)
                else:
                    entries.append(Entry(s, key, name, copy))
    return entries, skipped


def _fill(model, readers: list[WeightFiles], entries: list[Entry], skipped: dict, new_rows=(), seed=None,
          source_name=to_hf_name, strict=True) -> ConversionReport:
    """Fill each parameter from `entries` (names, shapes checked first) or as `new_rows` allow, report it; `source_name`
    names missing tensors. A differing tied copy fails if `strict`, else is a note (transformers ignores it)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    first = {id(p): name for name, p in model.named_parameters()}  # a shared parameter is listed once, first name
    problems, by_name, primary, others = [], {}, {}, []  # primary: first name -> the entry loaded into it
    for e in entries:
        if not e.copy and (other := by_name.setdefault(e.name, e)) is not e:
            problems.append(f"two source tensors map to {e.name}: {other.key} and {e.key}"
                            + (f" (in {readers[e.source].dir})" if other.source == e.source else ""))
            continue
        shape, want = readers[e.source].shapes[e.key], tuple(params[e.name].shape)
        if shape != want:
            problems.append(f"{e.key} (-> {e.name}): checkpoint has shape {shape}, model expects {want}")
        u = first[id(params[e.name])]
        if e.copy or u in primary:  # a tied copy, or the other stack's copy of a BERTShare tensor: compared
            others.append((u, e))
        else:
            primary[u] = e
    # Missing tensors are new if `new_rows` allow it and their whole group is missing (a partial MLM head is an error).
    missing, new, groups, required = [u for u in first.values() if u not in primary], {}, defaultdict(list), {}
    for n in missing + list(primary):
        for pattern, what in new_rows:
            if m := re.match(pattern, n):
                groups[(m.group("g"), what)].append(n)
                break
    for (g, what), names in groups.items():
        absent = [n for n in names if n not in primary]
        if absent and len(absent) < len(names):
            present = next(n for n in names if n in primary)
            problems.append(f"{g}* is only partly in the checkpoint: it has {source_name(present)} but not "
                            f"{source_name(absent[0])}")
        new.update(dict.fromkeys(absent, what))
    for n in (n for n in missing if n not in new):  # required: a source name -> the minis2s tensors it would fill
        required.setdefault(source_name(n), []).append(n)
    if required:
        problems.append(f"missing {len(required)} required tensor(s): "
                        + ", ".join(f"{k} (for {', '.join(v)})" for k, v in list(required.items())[:12])
                        + (" ..." if len(required) > 12 else ""))
    if problems:
        raise ValueError("cannot convert: " + " | ".join(problems))
    report = ConversionReport(new=new)
    why = skipped | _load(readers, primary, others, params, report, strict)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):  # new tensors: BERT's init of their modules
        if seed is not None:
            torch.manual_seed(seed)
        for owner in dict.fromkeys(n.rsplit(".", 1)[0] for n in new):
            cfg = model.config.encoder if owner.startswith("encoder.") else model.config.decoder
            init_weights(model.get_submodule(owner), cfg.initializer_range)
    report.sources = [SourceReport(str(r.dir), [p.name for p in r.files]) for r in readers]
    for e in (e for e in entries if not e.copy):
        report.sources[e.source].used.setdefault(e.key, []).append(e.name)
    for s, (r, sr) in enumerate(zip(readers, report.sources)):
        sr.ignored = {key: why.get((s, key), "not used") for key in r.keys() if key not in sr.used}
    return report


def _load(readers, primary: dict, others: list, params: dict, report: ConversionReport, strict: bool) -> dict:
    """Read each primary entry once, file by file, then compare the others with it; {(source, key): why unused}."""
    wanted, why, converted, threads = defaultdict(list), {}, set(), torch.get_num_threads()
    for u, e in primary.items():
        wanted[(e.source, e.key)].append(u)
    torch.set_num_threads(1)  # copies are memory-bound; waking a thread pool per tensor made them 10x slower here
    try:
        with torch.no_grad():
            for s, r in enumerate(readers):
                for key in r.keys():
                    t = r.get(key) if (s, key) in wanted else None
                    for u in wanted.get((s, key), ()):
                        if t.dtype != params[u].dtype:
                            converted.add(f"{t.dtype} -> {params[u].dtype}")
                        params[u].copy_(t)
            for u, e in others:
                if u not in primary:  # a tied copy of a tensor the checkpoint lacks, which is new
                    continue
                t, p, original = readers[e.source].get(e.key).to(params[u].dtype), params[u], primary[u].key
                if e.copy:
                    why[(e.source, e.key)] = f"tied copy of {original} (checked equal)"
                if torch.equal(t, p):
                    continue
                msg = (f"{e.key} should repeat {original} (both are {u}) but differs by up to "
                       f"{(t.float() - p.float()).abs().max().item():.3g}")
                if not e.copy:  # the two stacks' copies of one BERTShare tensor
                    raise ValueError(f"cannot convert: {msg}. {readers[e.source].dir / 'config.json'} sets "
                                     "tie_encoder_decoder, but the stacks' copies of a shared tensor differ, as after "
                                     "fine-tuning in transformers 5 (which keeps the key but no longer ties them): set "
                                     "tie_encoder_decoder to false to convert it as the BERT2BERT it now is")
                if strict:
                    raise ValueError(f"cannot convert: {msg}")
                report.notes.append(f"{msg}; {original} is used, as transformers does")
                why[(e.source, e.key)] = f"tied copy of {original} (differs, see note)"
    finally:
        torch.set_num_threads(threads)
        for r in readers:
            r.close()
    if converted:
        report.notes.append(f"dtype converted: {', '.join(sorted(converted))}")
    return why


# -- The operations --------------------------------------------------------------------------------------------------
def _bert_config(model_dir: Path) -> BertConfig:
    d = read_json(model_dir / "config.json")
    if "encoder" in d and "decoder" in d:
        raise ValueError(f"{model_dir} is an encoder-decoder checkpoint; use from_hf (weights_convert.py from-hf)")
    if d.get("model_type", "bert") != "bert":
        raise ValueError(f"{model_dir / 'config.json'}: model_type {d['model_type']!r} is not 'bert'")
    return BertConfig.from_dict(d)


def _vocab_file(model_dir: Path) -> Path | None:
    return next((model_dir / n for n in ("vocab.txt", "tokenizer.json") if (model_dir / n).is_file()), None)


def special_token_ids(model_dir) -> dict[str, int]:
    """The ids of [CLS]/[PAD]/[SEP] (decoder start, pad, eos; renamed by tokenizer_config.json, then by
    special_tokens_map.json, as in transformers) in `model_dir`'s vocabulary. bert-base-uncased: 101, 0, 102."""
    model_dir = Path(model_dir)
    strings = {k: default for k, (_, default) in SPECIAL_TOKENS.items()}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        d = read_json(model_dir / name) if (model_dir / name).is_file() else {}
        for k, (field_name, _) in SPECIAL_TOKENS.items():
            v = d.get(field_name)
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str):
                strings[k] = v
    if (source := _vocab_file(model_dir)) is None:
        raise FileNotFoundError(f"{model_dir} has neither vocab.txt nor tokenizer.json: cannot find the ids of "
                                f"{', '.join(strings.values())}")
    if source.name == "vocab.txt":
        vocab = {}
        for i, token in enumerate(source.read_text(encoding="utf-8").split("\n")):
            vocab.setdefault(token.rstrip("\r"), i)
    else:
        tj = read_json(source)
        vocab = {**((tj.get("model") or {}).get("vocab") or {}),
                 **{t["content"]: t["id"] for t in tj.get("added_tokens", [])}}
    if absent := [s for s in strings.values() if s not in vocab]:
        raise ValueError(f"{source} has no {', '.join(absent)} token")
    return {k: vocab[s] for k, s in strings.items()}


def warm_start(encoder_dir, decoder_dir=None, share: bool = False, seed: int | None = None,
               attn_implementation: str | None = None, output_loading_info: bool = False, model_cls=Bert2Bert):
    """A BERT2BERT (eval mode) from one BERT checkpoint or two (`decoder_dir`), as from_encoder_decoder_pretrained
    builds it; `share`: BERTShare; `seed`: reproducible new tensors; output_loading_info: (model, ConversionReport)."""
    encoder_dir, decoder_dir = Path(encoder_dir), Path(encoder_dir if decoder_dir is None else decoder_dir)
    same = decoder_dir.resolve() == encoder_dir.resolve()
    enc = replace(_bert_config(encoder_dir), is_decoder=False, add_cross_attention=False)
    dec = decoder_config_from(enc if same else _bert_config(decoder_dir))
    ids = special_token_ids(decoder_dir)
    if max(ids.values()) >= dec.vocab_size:
        raise ValueError(f"special ids {ids} do not fit the decoder's vocab_size {dec.vocab_size}")
    model = _skeleton(EncoderDecoderConfig(enc, dec, tie_encoder_decoder=share, **ids), model_cls, attn_implementation)
    readers = [WeightFiles(encoder_dir)] + ([] if same else [WeightFiles(decoder_dir)])
    roles = [("encoder", "decoder")] if same else [("encoder",), ("decoder",)]
    entries, skipped = _entries(readers, roles, dict(model.named_parameters(remove_duplicate=False)), skip_shared=True)
    report = _fill(model, readers, entries, skipped, WARM_START_NEW, seed, source_name=_bert_key, strict=False)
    vocabs = [p.read_bytes() if p else None for p in (_vocab_file(encoder_dir), _vocab_file(decoder_dir))]
    if not same and vocabs[0] != vocabs[1]:
        report.notes.append(f"the encoder and decoder vocabularies differ; special ids come from {decoder_dir}")
    return (model, report) if output_loading_info else model


def _bert_key(name: str) -> str:
    """minis2s name -> the key a BERT checkpoint holds it under: "decoder.layers.0.ffn.up.weight" ->
    "[bert.]encoder.layer.0.intermediate.dense.weight"; "lm_head.bias" -> "cls.predictions.bias"."""
    hf, prefixes = to_hf_name(name) or name, (("decoder.bert.", "[bert.]"), ("decoder.", ""), ("encoder.", "[bert.]"))
    return next((shown + hf.removeprefix(prefix) for prefix, shown in prefixes if hf.startswith(prefix)), hf)


def from_hf(src_dir, attn_implementation: str | None = None, output_loading_info: bool = False, model_cls=Bert2Bert):
    """A transformers EncoderDecoderModel directory -> minis2s, every weight kept, tied and BERTShare copies checked
    equal. Special ids: generation_config.json (what transformers' generate reads), else config.json."""
    src_dir = Path(src_dir)
    where, d = src_dir / "config.json", read_json(src_dir / "config.json")
    if "encoder" not in d or "decoder" not in d:
        raise ValueError(f"{where} has no nested encoder/decoder configs: not a transformers EncoderDecoderModel "
                         "(for a plain BERT checkpoint use warm_start / warm-start)")
    if not_bert := [part for part in ("encoder", "decoder") if d[part].get("model_type", "bert") != "bert"]:
        raise ValueError(f"{where}: the {not_bert[0]} is {d[not_bert[0]]['model_type']!r}; only BERT is supported")
    if d["decoder"].get("tie_word_embeddings", True) is False:
        raise ValueError(f"{where}: the decoder's LM head is not tied to its word embeddings (tie_word_embeddings "
                         "false); minis2s's LM head always projects with them")
    g = read_json(src_dir / "generation_config.json") if (src_dir / "generation_config.json").is_file() else {}
    g = {k: g[k] for k in SPECIAL_TOKENS if g.get(k) is not None}
    notes = [f"{k}: config.json says {d[k]}, generation_config.json {v} (used)"
             for k, v in g.items() if d.get(k) is not None and d[k] != v]
    d = {**d, **g, "encoder": {**d["encoder"], "is_decoder": False, "add_cross_attention": False}}
    model = _skeleton(EncoderDecoderConfig.from_dict(d), model_cls, attn_implementation)
    reader = WeightFiles(src_dir)
    entries, skipped = _entries([reader], [("model",)], dict(model.named_parameters(remove_duplicate=False)), False)
    report = _fill(model, [reader], entries, skipped)
    report.notes[:0] = notes
    return (model, report) if output_loading_info else model


def load_minis2s(model_dir, attn_implementation: str | None = None, model_cls=Bert2Bert) -> Bert2Bert:
    """A minis2s checkpoint directory, read tensor by tensor into an uninitialised model (one model's memory)."""
    model_dir = Path(model_dir)
    config = EncoderDecoderConfig.from_dict(read_json(model_dir / "config.json"))
    if is_hf_layout(model_dir):
        raise ValueError(f"{model_dir} holds transformers' key names (decoder.bert.*): convert it with from_hf")
    model = _skeleton(config, model_cls, attn_implementation)
    reader = WeightFiles(model_dir)
    check_state({k: p.shape for k, p in unique_state(model).items()}, reader.shapes, source=str(model_dir))
    _fill(model, [reader], [Entry(0, k, k, False) for k in reader.keys()], {}, source_name=str)
    return model


def to_hf(model: Bert2Bert, out_dir, tokenizer_dir=None, force: bool = False) -> ConversionReport:
    """Write `model` as transformers' `EncoderDecoderModel.save_pretrained` would, with `tokenizer_dir`'s tokenizer
    files; a BERTShare tensor under both stacks' names, for 4.x and 5.x alike (docs/checkpoints.md)."""
    sr = SourceReport("minis2s model", [str(Path(out_dir) / "model.safetensors")])
    tensors, names, adapters, unmapped = {}, {}, set(), []  # names: parameter id -> its first name
    for n, p in model.named_parameters(remove_duplicate=False):
        if ".adapters." in n:  # "...layers.{i}.adapters.{site}.{adapter name}.{tensor}"
            adapters.add(n.split(".adapters.")[1].split(".")[1])
        elif to_hf_name(n) is None:
            unmapped.append(n)
        elif id(p) in names and not model.config.tie_encoder_decoder:
            raise ValueError(f"{names[id(p)]} and {n} share one tensor but config.tie_encoder_decoder is False")
        else:  # safetensors refuses two entries on one storage: a second name gets a copy
            tensors[to_hf_name(n)] = p.detach().clone() if id(p) in names else p
            sr.used[n] = [to_hf_name(n)]
            names.setdefault(id(p), n)
    if unmapped:
        raise ValueError(f"{len(unmapped)} tensor(s) have no transformers counterpart: {', '.join(unmapped[:10])}")
    report = ConversionReport(sources=[sr])
    if adapters:  # the base model goes to transformers; adapters travel on their own, as adapters-library files
        report.notes.append(f"adapters not written ({', '.join(sorted(adapters))}): save them with save_adapter, "
                            "which the adapters library loads")
    if len(sr.used) > len(names):
        report.notes.append(f"BERTShare: the {len(sr.used) - len(names)} shared tensors are written under both stacks' "
                            "names (transformers 4.x ties them again on load; 5.x loads them as two equal copies)")
    report.notes.append("decoder.cls.predictions.decoder.{weight,bias} are not written: transformers ties them to "
                        "decoder.bert.embeddings.word_embeddings.weight and decoder.cls.predictions.bias")
    config = model.config.to_dict()
    for part in ("encoder", "decoder"):
        config[part].pop("attn_implementation", None)  # a load-time choice in transformers, not a config field
    config["decoder"]["tie_word_embeddings"] = True  # minis2s's LM head is always tied; no version's default unties it
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    with atomic_directory(out_dir, force=force) as tmp:
        write_json(tmp / "config.json", config)
        write_json(tmp / "generation_config.json", {k: getattr(model.config, k) for k in SPECIAL_TOKENS})
        write_safetensors(tmp / "model.safetensors", tensors)
        copied = copy_tokenizer_files(tokenizer_dir, tmp)
    if copied:
        report.notes.append(f"copied {', '.join(copied)}")
    return report


def copy_tokenizer_files(src_dir, dst_dir) -> list[str]:
    """Copy the TOKENIZER_FILES that `src_dir` (None: none) holds into `dst_dir`; return their names."""
    names = [] if src_dir is None else [n for n in TOKENIZER_FILES if (Path(src_dir) / n).is_file()]
    for n in names:
        shutil.copyfile(Path(src_dir) / n, Path(dst_dir) / n)
    return names


def save_minis2s(model: Bert2Bert, out_dir, tokenizer_dir=None, force: bool = True) -> list[str]:
    """config.json, model.safetensors (shared tensors once, no adapters), tokenizer files (returned); all atomic."""
    base = {k: v for k, v in unique_state(model).items() if ".adapters." not in k}
    with atomic_directory(out_dir, force=force) as tmp:
        write_json(tmp / "config.json", model.config.to_dict())
        write_safetensors(tmp / "model.safetensors", base)
        return copy_tokenizer_files(tokenizer_dir, tmp)
