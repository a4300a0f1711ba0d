"""Converting checkpoints: published BERT files and transformers' EncoderDecoderModel directories <-> minis2s.

    warm_start(enc_dir, dec_dir)  one or two BERT checkpoints -> a BERT2BERT, built as transformers'
                                  `EncoderDecoderModel.from_encoder_decoder_pretrained` builds it
    from_hf(src_dir)              a transformers EncoderDecoderModel directory -> minis2s, every weight kept
    to_hf(model, out_dir)         minis2s -> a directory transformers' `EncoderDecoderModel.from_pretrained` loads
                                  with no missing or unexpected keys

`weights_convert.py` is the command line for the three.

Names. Renaming uses the core table of checkpoint.py (`from_hf_name`, `to_hf_name`). A key of a published BERT
checkpoint is first written the way transformers' EncoderDecoderModel would hold it, by putting the prefix of its
role in front ("encoder.", "decoder.bert.", or "decoder." for the MLM head `cls.*`), and then looked up there:

    bert.encoder.layer.3.output.LayerNorm.gamma      published bert-base-uncased (BertForPreTraining, TF-era names)
    encoder.layer.3.output.LayerNorm.weight          legacy name fixed, `bert.` prefix removed
    decoder.bert.encoder.layer.3.output.LayerNorm.weight    as the decoder of an EncoderDecoderModel
    decoder.layers.3.ffn_ln.weight                   minis2s (checkpoint.from_hf_name)

What is specific to published files (legacy names, the `bert.` prefix, heads and buffers a seq2seq model does not use,
tied copies) is the data just below. Every source key ends up either used or ignored with a reason: see
`ConversionReport`.

Memory. The model is built on the meta device and materialised without random init, then filled one tensor at a
time: safetensors files are read with `safe_open` per key, `pytorch_model.bin` is memory-mapped, shards are visited
one file at a time. Converting bert-large needs about one model's worth of memory, not two.

Security. `pytorch_model.bin` is a pickle, and a pickle can run code. It is only ever opened with
`torch.load(weights_only=True)`, which accepts tensors and plain containers and rejects anything else before it runs.

References: Rothe, Narayan, Severyn 2020 (arXiv 1907.12461) for warm-starting and BERTShare; transformers 4.57.6
`EncoderDecoderModel` for the layouts (its `save_pretrained` output, read key by key).
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import shutil
import zipfile
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import check_state, from_hf_name, to_hf_name, unique_state
from .config import BertConfig, EncoderDecoderConfig, decoder_config_from
from .files import atomic_directory, read_json, write_json, write_safetensors
from .model import Bert2Bert, init_weights

# ---------------------------------------------------------------------------------------------------------------
# Published-checkpoint specifics, as data.

# Weight files a checkpoint directory may hold, in the order they are preferred (transformers prefers safetensors).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# TF-era LayerNorm names (bert-base-uncased's pytorch_model.bin uses them) -> today's names; a key ending in the
# first is read as if it ended in the second, exactly as transformers does.
LEGACY_NAMES = [("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias")]

# BertForPreTraining / BertForMaskedLM / BertLMHeadModel keep their BertModel under this prefix.
BASE_PREFIX = "bert."

# Where a BERT key (prefix removed) sits in transformers' EncoderDecoderModel: (key starts with, prefix to add).
# The first matching row wins; a role without a matching row does not use the key.
ROLE_PREFIXES = {
    "encoder": [("cls.", None), ("", "encoder.")],  # the MLM head has no place in an encoder
    "decoder": [("cls.", "decoder."), ("", "decoder.bert.")],
}

# Tied copies: transformers key of a tensor that repeats another -> the key of the tensor it repeats. The LM head's
# output projection IS the decoder's word-embedding matrix and its bias IS cls.predictions.bias; older files store
# them twice. The copy is compared with the original and not loaded.
TIED_COPIES = {
    "decoder.cls.predictions.decoder.weight": "decoder.bert.embeddings.word_embeddings.weight",
    "decoder.cls.predictions.decoder.bias": "decoder.cls.predictions.bias",
}

# Source keys a BERT2BERT never uses: (regex searched in the key, why).
IGNORED_KEYS = [
    (r"(^|\.)position_ids$", "buffer of position indices (minis2s computes them)"),
    (r"(^|\.)cls\.seq_relationship\.", "next-sentence-prediction head (BERT pre-training only)"),
]

# Tensors a warm start may create when the checkpoint lacks them: (regex with the group `g` that must be absent
# as a whole, what it is). Everything else missing from a checkpoint is an error, never a silent random init.
WARM_START_NEW = [
    (r"^(?P<g>decoder\.layers\.\d+\.)(cross_attn|cross_ln)\.", "cross-attention (a BERT checkpoint has none)"),
    (r"^(?P<g>lm_head\.)(dense|ln)\.", "LM-head transform (the decoder checkpoint has no MLM head)"),
    (r"^(?P<g>lm_head\.bias)$", "LM bias (the decoder checkpoint has no cls.predictions.bias)"),
    (r"^(?P<g>encoder\.pooler\.)", "pooler (absent from the encoder checkpoint; a seq2seq model never calls it)"),
]

# Special tokens, found in the vocabulary by their strings.
SPECIAL_TOKENS = {"decoder_start_token_id": ("cls_token", "[CLS]"), "pad_token_id": ("pad_token", "[PAD]"),
                  "eos_token_id": ("sep_token", "[SEP]")}


# ---------------------------------------------------------------------------------------------------------------
# The report: what happened to every source key and every model tensor.

@dataclass
class SourceReport:
    """One checkpoint directory read: which of its keys filled which minis2s tensors, and why the rest did not."""

    path: str
    files: list[str]  # the weight files read, in order
    used: dict[str, list[str]] = field(default_factory=dict)  # source key -> minis2s keys it filled
    ignored: dict[str, str] = field(default_factory=dict)  # source key -> why it filled nothing


@dataclass
class ConversionReport:
    """Every source key is in exactly one of `used` / `ignored`; every model tensor came from a source or is `new`."""

    sources: list[SourceReport] = field(default_factory=list)
    new: dict[str, str] = field(default_factory=dict)  # minis2s key -> what it is (initialised here)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        """Readable summary; keys that differ only in the layer number or the last part are written once:
        "encoder.layer.{0-11}.output.dense.{weight,bias} -> encoder.layers.{0-11}.ffn.down.{weight,bias}"."""
        lines = []
        for s in self.sources:
            lines.append(f"{s.path} ({', '.join(s.files)}): {len(s.used) + len(s.ignored)} tensors, "
                         f"{len(s.used)} used, {len(s.ignored)} ignored")
            lines += [f"  {row[0]} -> {', '.join(row[1:])}" for row in _compress([(k, *v) for k, v in s.used.items()])]
            for reason, keys in _by_value(s.ignored).items():
                lines.append(f"  ignored {', '.join(row[0] for row in _compress([(k,) for k in keys]))}: {reason}")
        if self.new:
            lines.append(f"new {len(self.new)} tensors (N(0, initializer_range) weights, zero biases, LayerNorm 1/0):")
            for what, keys in _by_value(self.new).items():
                lines.append(f"  {', '.join(row[0] for row in _compress([(k,) for k in keys]))}: {what}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _compress(rows: list[tuple]) -> list[tuple]:
    """Merge rows of keys (a source key and its targets) that differ only in the layer number, then in the last part.

    [("l.0.q.weight", "x.0.weight"), ("l.1.q.weight", "x.1.weight"), ("l.0.q.bias", "x.0.bias"), ...]
    -> [("l.{0-1}.q.{weight,bias}", "x.{0-1}.{weight,bias}")]
    """
    by_layer = defaultdict(list)
    for row in rows:
        found = [re.search(r"\.(\d+)\.", k) for k in row]
        layer = found[0].group(1) if found[0] else None
        if layer is None or any(m is None or m.group(1) != layer for m in found):
            by_layer[row].append(None)
            continue
        by_layer[tuple(k[:m.start()] + ".{i}." + k[m.end():] for k, m in zip(row, found))].append(int(layer))
    rows = [tuple(_layers(k, idx) for k in row) for row, idx in by_layer.items()]
    for level in (1, 2):  # merge on the last dotted part, then on the one before it
        groups = defaultdict(list)
        for row in rows:
            split = [k.split(".") for k in row]
            parts = {ks[-level] if len(ks) > level else None for ks in split}
            if len(parts) != 1 or None in parts:
                groups[row].append(None)
                continue
            key = tuple((".".join(ks[:-level]), ".".join(ks[len(ks) - level + 1:])) for ks in split)
            groups[key].append(parts.pop())
        rows = [row if parts == [None] else tuple(
                    ".".join(x for x in (head, parts[0] if len(parts) == 1 else "{" + ",".join(parts) + "}", tail) if x)
                    for head, tail in row)
                for row, parts in groups.items()]
    return rows


def _layers(pattern: str, idx: list) -> str:
    """("layers.{i}.attn", [0, 1, 2, 5]) -> "layers.{0-2,5}.attn"."""
    if "{i}" not in pattern:
        return pattern
    idx = sorted(idx)
    runs, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return pattern.replace("{i}", "{" + ",".join(runs) + "}")


def _by_value(d: dict) -> dict:
    out = defaultdict(list)
    for k, v in d.items():
        out[v].append(k)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Reading weight files lazily.

class WeightFiles:
    """The tensors of one checkpoint directory: listed (with shapes) without reading them, then read one at a time.

    Accepts model.safetensors, pytorch_model.bin, and either of them sharded with an `*.index.json`. At most one
    file is open at a time; `keys()` lists keys file by file, so reading in that order visits each shard once.
    """

    def __init__(self, directory):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir} is not a directory")
        name = next((n for n in WEIGHT_FILES if (self.dir / n).is_file()), None)
        if name is None:
            raise FileNotFoundError(f"{self.dir} holds no weights: none of {', '.join(WEIGHT_FILES)}")
        self.files = self._shards(self.dir / name) if name.endswith(".index.json") else [self.dir / name]
        self._where, self._shapes, self._current = {}, {}, None  # _current: (path, the one open file)
        for path in self.files:
            f = self._open_file(path)
            for key in f.keys():
                if key in self._where:
                    raise ValueError(f"{key} is stored twice: in {self._where[key].name} and {path.name}")
                self._where[key], self._shapes[key] = path, f.shape(key)
            if len(self.files) == 1:
                self._current = (path, f)  # read from it next, without opening it a second time
            else:
                f.close()
        if name.endswith(".index.json"):
            absent = {k: v for k, v in self._index.items() if k not in self._where}
            if absent:
                k, v = next(iter(absent.items()))
                raise ValueError(f"{self.dir / name} lists {len(absent)} tensor(s) its shards lack, e.g. {k} in {v}")

    def _shards(self, index_path: Path) -> list[Path]:
        try:
            self._index = read_json(index_path)["weight_map"]
            names = list(dict.fromkeys(self._index.values()))  # unique, in order of first mention
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index_path} is not a valid shard index (JSON with a 'weight_map'): {e!r}") from e
        for n in names:
            if not (self.dir / n).is_file():
                raise FileNotFoundError(f"{index_path} names shard {n}, which is not in {self.dir}")
        return [self.dir / n for n in names]

    @staticmethod
    def _open_file(path: Path):
        return _SafetensorsFile(path) if path.name.endswith(".safetensors") else _PickleFile(path)

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, key: str) -> tuple:
        return self._shapes[key]

    def get(self, key: str) -> torch.Tensor:
        path = self._where[key]
        if self._current is None or self._current[0] != path:
            self.close()
            self._current = (path, self._open_file(path))
        return self._current[1].get(key)

    def close(self) -> None:
        if self._current is not None:
            self._current[1].close()
            self._current = None


class _SafetensorsFile:
    """safe_open: the header is parsed (and checked against the file size) at once, tensors are read on demand."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        try:
            self.f = safe_open(str(path), framework="pt")
        except Exception as e:  # SafetensorError is not exported under one stable name across versions
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e

    def keys(self):
        return list(self.f.keys())

    def shape(self, key):
        return tuple(self.f.get_slice(key).get_shape())

    def get(self, key):
        try:
            return self.f.get_tensor(key)
        except Exception as e:
            raise ValueError(f"{self.path}: cannot read tensor {key} (truncated or corrupt?): {e}") from e

    def close(self):
        self.f = None


class _PickleFile:
    """pytorch_model.bin, opened ONLY with torch.load(weights_only=True); memory-mapped when it is a zip archive
    (torch >= 1.6 format), read whole when it is the legacy format (mmap needs the zip layout)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as e:
            found = re.search(r"(Unsupported global|Unsupported operand)[^\n]*", str(e))
            raise ValueError(f"{path} was refused: it is not a plain tensor checkpoint, loading it would run or build "
                             f"arbitrary objects ({found.group(0) if found else type(e).__name__}). "
                             f"Only torch.load(weights_only=True) is ever used here.") from None
        except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a dict of tensors")
        bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
        if bad:
            raise ValueError(f"{path}: entry {bad[0]!r} is not a tensor with a string key ({len(bad)} such entries)")
        self.state = state

    def keys(self):
        return list(self.state)

    def shape(self, key):
        return tuple(self.state[key].shape)

    def get(self, key):
        return self.state[key]

    def close(self):
        self.state = None


def is_hf_layout(model_dir) -> bool:
    """True when `model_dir` holds a transformers EncoderDecoderModel (keys `decoder.bert.*`), not a minis2s one."""
    try:
        files = WeightFiles(model_dir)
    except (OSError, ValueError):
        return False
    files.close()
    return any(k.startswith("decoder.bert.") for k in files.keys())


# ---------------------------------------------------------------------------------------------------------------
# Filling a model from sources.

@dataclass
class _Entry:
    source: int  # index into the list of readers
    key: str  # source key
    name: str  # minis2s name it maps to
    copy: bool = False  # a tied copy: compared with the tensor it repeats, never loaded
    strict: bool = True  # for copies: a difference is an error (True) or a note (False)


def _skeleton(config: EncoderDecoderConfig, model_cls=Bert2Bert) -> Bert2Bert:
    """`model_cls(config)` with uninitialised storage; BERTShare (config.tie_encoder_decoder) is already applied.

    Built on the meta device (shapes only: drawing 250M random numbers just to overwrite them would cost seconds at
    bert-base size), then given empty CPU storage; every tensor is then loaded or initialised explicitly.
    `model_cls` is the class to build: the core Bert2Bert, or a subclass (pretrained.EncoderDecoderModel).
    """
    with torch.device("meta"):
        model = model_cls(config)
    return model.to_empty(device="cpu")


def _fill(model, readers: list[WeightFiles], entries: list[_Entry], skipped: list[dict], new_rows=(), seed=None,
          source_name=to_hf_name) -> ConversionReport:
    """Fill every parameter of `model` from `entries`, or initialise it when `new_rows` allow; report what happened.

    Checks, before reading any tensor: two source keys for one name (a collision), shapes, required tensors.
    `skipped[s]` says why keys of source `s` that have no entry are unused; `source_name` names a missing tensor
    the way the source would.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    first, ids = {}, {}  # every name -> the name its parameter is listed under first (shared ones have several)
    for name, p in params.items():
        first[name] = ids.setdefault(id(p), name)
    primary, copies = _plan(readers, entries, params, first)
    new = _new_tensors([n for n in params if first[n] == n and n not in primary], primary, new_rows, source_name)
    report = ConversionReport(new=new)
    checked = _load(readers, primary, copies, params, report)
    _initialise(model, new, seed)

    used = [defaultdict(list) for _ in readers]
    for e in list(primary.values()) + [e for es in copies.values() for e in es if not e.copy]:
        used[e.source][e.key].append(e.name)
    for s, r in enumerate(readers):
        sr = SourceReport(str(r.dir), [p.name for p in r.files])
        for key in r.keys():
            if key in used[s]:
                sr.used[key] = used[s][key]
            else:
                sr.ignored[key] = checked.get((s, key)) or skipped[s].get(key, "not used")
        report.sources.append(sr)
    return report


def _plan(readers, entries, params, first):
    """One primary source per parameter (the entry under its first name wins), the rest are copies to compare."""
    problems, by_name, primary, copies = [], {}, {}, defaultdict(list)
    for e in entries:
        if not e.copy:
            if e.name in by_name:
                other = by_name[e.name]
                problems.append(f"two source tensors map to {e.name}: {other.key} and {e.key}"
                                + (f" (in {readers[e.source].dir})" if other.source == e.source else ""))
                continue
            by_name[e.name] = e
        shape, want = readers[e.source].shape(e.key), tuple(params[e.name].shape)
        if shape != want:
            problems.append(f"{e.key} (-> {e.name}): checkpoint has shape {shape}, model expects {want}")
    if problems:
        raise ValueError("cannot convert: " + " | ".join(problems))
    for name, e in by_name.items():
        u = first[name]
        if u in primary and name != u:
            copies[u].append(e)
        else:
            if u in primary:
                copies[u].append(primary[u])
            primary[u] = e
    for e in entries:
        if e.copy:
            copies[first[e.name]].append(e)
    return primary, copies


def _new_tensors(missing, primary, new_rows, source_name) -> dict[str, str]:
    """Missing tensors must belong to an allowed-new group that is absent as a whole: name -> what it is."""
    groups, new = defaultdict(list), {}
    for n in list(missing) + list(primary):
        for row, (pattern, _) in enumerate(new_rows):
            m = re.match(pattern, n)
            if m:
                groups[(row, m.group("g"))].append(n)
                break
    problems = []
    for (row, g), names in groups.items():
        absent = [n for n in names if n not in primary]
        if absent and len(absent) < len(names):
            present = next(n for n in names if n in primary)
            problems.append(f"{g}* is only partly in the checkpoint: it has {source_name(present)} but not "
                            f"{source_name(absent[0])}")
        new.update({n: new_rows[row][1] for n in absent})
    required = defaultdict(list)  # source name -> the minis2s tensors it would fill
    for n in missing:
        if n not in new:
            required[source_name(n)].append(n)
    if required:
        problems.append(f"missing {len(required)} required tensor(s): "
                        + ", ".join(f"{k} (for {', '.join(v)})" for k, v in list(required.items())[:12])
                        + (" ..." if len(required) > 12 else ""))
    if problems:
        raise ValueError("cannot convert: " + " | ".join(problems))
    return new


def _load(readers, primary, copies, params, report) -> dict:
    """Read each needed source tensor once, file by file; compare tied copies. Returns {(source, key): why unused}."""
    wanted = defaultdict(list)  # (source, key) -> parameter names it fills
    for u, e in primary.items():
        wanted[(e.source, e.key)].append(u)
    converted, checked, threads = set(), {}, torch.get_num_threads()
    torch.set_num_threads(1)  # copies are memory-bound; waking a thread pool per tensor made them 10x slower here
    try:
        with torch.no_grad():
            for s, r in enumerate(readers):
                for key in r.keys():
                    if (s, key) in wanted:
                        t = r.get(key)
                        for u in wanted[(s, key)]:
                            if t.dtype != params[u].dtype:
                                converted.add(f"{t.dtype} -> {params[u].dtype}")
                            params[u].copy_(t)
            for u, es in copies.items():  # a tied copy must equal what it repeats
                for e in es:
                    t = readers[e.source].get(e.key).to(params[u].dtype)
                    equal = torch.equal(t, params[u])
                    if not equal:
                        diff = (t.float() - params[u].float()).abs().max().item()
                        msg = f"{e.key} should repeat {primary[u].key} (both are {u}) but differs by up to {diff:.3g}"
                        if e.strict:
                            raise ValueError(f"cannot convert: {msg}")
                        report.notes.append(f"{msg}; {primary[u].key} is used, as transformers does")
                    if e.copy:
                        checked[(e.source, e.key)] = (f"tied copy of {primary[u].key} "
                                                      f"({'checked equal' if equal else 'differs, see note'})")
    finally:
        torch.set_num_threads(threads)
        for r in readers:
            r.close()
    if converted:
        report.notes.append(f"dtype converted: {', '.join(sorted(converted))}")
    return checked


def _initialise(model, new: dict, seed) -> None:
    """BERT's init (model.init_weights) for the modules owning new tensors; reproducible with a seed."""
    modules = dict(model.named_modules())
    with torch.random.fork_rng(devices=[]) if seed is not None else nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        for owner in dict.fromkeys(n.rsplit(".", 1)[0] for n in new):
            cfg = model.config.encoder if owner.startswith("encoder.") else model.config.decoder
            init_weights(modules[owner], cfg.initializer_range)


def _map_key(key: str, hf_prefix: str | None, params: dict, tied_copies=TIED_COPIES):
    """One source key -> (minis2s name, is_tied_copy) or (None, why not).

    `hf_prefix` None means the key is already a transformers EncoderDecoderModel key.
    """
    for pattern, why in IGNORED_KEYS:
        if re.search(pattern, key):
            return None, why
    for old, new in LEGACY_NAMES:
        if key.endswith(old):
            key = key[: -len(old)] + new
    hf = key if hf_prefix is None else hf_prefix + key
    if hf in tied_copies:
        return from_hf_name(tied_copies[hf]), True
    name = from_hf_name(hf)
    if name is None:
        return None, "not part of a BERT2BERT (no row in the name table)"
    if name not in params:
        if name.startswith("decoder.pooler"):
            return None, "the decoder (BertLMHeadModel) has no pooler"
        return None, f"{name} does not exist in this model"
    return name, False


# ---------------------------------------------------------------------------------------------------------------
# The three operations.

def _bert_config(model_dir: Path) -> BertConfig:
    d = read_json(model_dir / "config.json")
    if "encoder" in d and "decoder" in d:
        raise ValueError(f"{model_dir} is an encoder-decoder checkpoint; use from_hf (weights_convert.py from-hf)")
    if d.get("model_type", "bert") != "bert":
        raise ValueError(f"{model_dir / 'config.json'}: model_type {d['model_type']!r} is not 'bert'")
    return BertConfig.from_dict(d)


def special_token_ids(model_dir) -> dict[str, int]:
    """The ids of [CLS]/[PAD]/[SEP] (decoder start, pad, eos) in the vocabulary of `model_dir`.

    Token strings come from special_tokens_map.json / tokenizer_config.json when they name them, else BERT's;
    ids from vocab.txt (line number) or tokenizer.json. Example, bert-base-uncased: start 101, pad 0, eos 102.
    """
    model_dir = Path(model_dir)
    strings = {k: default for k, (_, default) in SPECIAL_TOKENS.items()}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the later file wins, as in transformers
        if (model_dir / name).is_file():
            d = read_json(model_dir / name)
            for k, (field_name, _) in SPECIAL_TOKENS.items():
                v = d.get(field_name)
                v = v.get("content") if isinstance(v, dict) else v
                if isinstance(v, str):
                    strings[k] = v
    if (model_dir / "vocab.txt").is_file():
        lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
        vocab, source = {}, model_dir / "vocab.txt"
        for i, tok in enumerate(lines):
            vocab.setdefault(tok.rstrip("\r"), i)
    elif (model_dir / "tokenizer.json").is_file():
        source = model_dir / "tokenizer.json"
        tj = read_json(source)
        vocab = dict((tj.get("model") or {}).get("vocab") or {})
        vocab.update({t["content"]: t["id"] for t in tj.get("added_tokens", [])})
    else:
        raise FileNotFoundError(f"{model_dir} has neither vocab.txt nor tokenizer.json: cannot find the ids of "
                                f"{', '.join(strings.values())}")
    absent = [s for s in strings.values() if s not in vocab]
    if absent:
        raise ValueError(f"{source} has no {', '.join(absent)} token")
    return {k: vocab[s] for k, s in strings.items()}


def warm_start(encoder_dir, decoder_dir=None, share: bool = False, seed: int | None = None,
               attn_implementation: str | None = None, output_loading_info: bool = False, model_cls=Bert2Bert):
    """A BERT2BERT from one or two BERT checkpoints, as transformers' `from_encoder_decoder_pretrained` builds it.

    Encoder: every tensor from `encoder_dir` (pooler included). Decoder: the same BERT from `decoder_dir` (default:
    `encoder_dir`) made causal, with new cross-attention (N(0, initializer_range), biases 0, LayerNorm 1/0); the LM
    head's transform and bias come from the checkpoint's MLM head (`cls.predictions.*`) when it has one, else are new
    (bias 0). Special ids from the decoder's vocabulary: start [CLS], pad [PAD], eos [SEP]. `share=True` ties the
    two stacks (BERTShare, `share_encoder_decoder`); the decoder's own copies of shared tensors are then unused.
    `seed` makes the new tensors reproducible. Returns the model in eval mode (call `.train()` to fine-tune), or
    `(model, ConversionReport)` with `output_loading_info=True`.
    """
    encoder_dir = Path(encoder_dir)
    decoder_dir = encoder_dir if decoder_dir is None else Path(decoder_dir)
    same = decoder_dir.resolve() == encoder_dir.resolve()
    enc = dataclasses.replace(_bert_config(encoder_dir), is_decoder=False, add_cross_attention=False)
    dec = decoder_config_from(enc if same else _bert_config(decoder_dir))
    if attn_implementation is not None:
        enc.attn_implementation = dec.attn_implementation = attn_implementation
    ids = special_token_ids(decoder_dir)
    if max(ids.values()) >= dec.vocab_size:
        raise ValueError(f"special ids {ids} do not fit the decoder's vocab_size {dec.vocab_size}")
    config = EncoderDecoderConfig(enc, dec, tie_encoder_decoder=share, **ids)
    model = _skeleton(config, model_cls)  # BERTShare is applied here (config.tie_encoder_decoder), before loading

    readers = [WeightFiles(encoder_dir)] + ([] if same else [WeightFiles(decoder_dir)])
    roles = [("encoder", "decoder")] if same else [("encoder",), ("decoder",)]
    params = dict(model.named_parameters(remove_duplicate=False))
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    shared = {n for n, p in params.items() if n.startswith("decoder.") and id(p) in encoder_ids}
    entries, skipped = [], []
    for s, (reader, rs) in enumerate(zip(readers, roles)):
        why = {}
        for key in reader.keys():
            bare = key.removeprefix(BASE_PREFIX)
            why_not = next((why for pattern, why in IGNORED_KEYS if re.search(pattern, key)), None)
            if why_not:
                why[key] = why_not
                continue
            for role in rs:
                prefix = next(p for start, p in ROLE_PREFIXES[role] if bare.startswith(start))
                if prefix is None:
                    why.setdefault(key, "MLM head: only a decoder has one (this checkpoint warm-starts the encoder)")
                    continue
                name, copy = _map_key(bare, prefix, params)
                if name is None:
                    why.setdefault(key, copy)
                elif name in shared and not copy:
                    why.setdefault(key, "BERTShare: the decoder uses the encoder's tensor")
                else:
                    entries.append(_Entry(s, key, name, copy=copy, strict=not copy))
        skipped.append(why)
    report = _fill(model, readers, entries, skipped, WARM_START_NEW, seed, source_name=_bert_key)
    if not same and _vocab_text(encoder_dir) != _vocab_text(decoder_dir):
        report.notes.append(f"the encoder and decoder vocabularies differ; special ids come from {decoder_dir}")
    model.eval()
    return (model, report) if output_loading_info else model


def _bert_key(name: str) -> str:
    """minis2s name -> the key a BERT checkpoint holds it under: "decoder.layers.0.ffn.up.weight" ->
    "[bert.]encoder.layer.0.intermediate.dense.weight"; "lm_head.bias" -> "cls.predictions.bias"."""
    hf = to_hf_name(name) or name
    for prefix, shown in (("decoder.bert.", "[bert.]"), ("decoder.", ""), ("encoder.", "[bert.]")):
        if hf.startswith(prefix):
            return shown + hf[len(prefix):]
    return hf


def _vocab_text(d: Path):
    for name in ("vocab.txt", "tokenizer.json"):
        if (d / name).is_file():
            return (d / name).read_bytes()
    return None


def from_hf(src_dir, attn_implementation: str | None = None, output_loading_info: bool = False, model_cls=Bert2Bert):
    """A transformers EncoderDecoderModel directory (BertModel + BertLMHeadModel) -> minis2s, every weight kept.

    Keys `encoder.*`, `decoder.bert.*`, `decoder.cls.*`; tied copies (`decoder.cls.predictions.decoder.*`) are
    checked and dropped; with `tie_encoder_decoder` the file may hold either or both copies of a shared tensor
    (both must then be equal). Special ids: generation_config.json (what transformers' generate reads), else config.json.
    """
    src_dir = Path(src_dir)
    d = read_json(src_dir / "config.json")
    if "encoder" not in d or "decoder" not in d:
        raise ValueError(f"{src_dir / 'config.json'} has no nested encoder/decoder configs: not a transformers "
                         "EncoderDecoderModel (for a plain BERT checkpoint use warm_start / warm-start)")
    for part in ("encoder", "decoder"):
        if d[part].get("model_type", "bert") != "bert":
            raise ValueError(f"{src_dir / 'config.json'}: the {part} is {d[part]['model_type']!r}; only BERT is supported")
    if d["decoder"].get("tie_word_embeddings", True) is False:
        raise ValueError(f"{src_dir / 'config.json'}: the decoder's LM head is not tied to its word embeddings "
                         "(tie_word_embeddings false); minis2s's LM head always projects with them")
    d = dict(d, encoder=dict(d["encoder"]), decoder=dict(d["decoder"]))
    notes = []
    if (src_dir / "generation_config.json").is_file():
        g = read_json(src_dir / "generation_config.json")
        for k in SPECIAL_TOKENS:
            if g.get(k) is not None:
                if d.get(k) is not None and d[k] != g[k]:
                    notes.append(f"{k}: config.json says {d[k]}, generation_config.json {g[k]} (used)")
                d[k] = g[k]
    d["encoder"].update(is_decoder=False, add_cross_attention=False)
    config = EncoderDecoderConfig.from_dict(d)
    if attn_implementation is not None:
        config.encoder.attn_implementation = config.decoder.attn_implementation = attn_implementation
    model = _skeleton(config, model_cls)
    reader = WeightFiles(src_dir)
    params = dict(model.named_parameters(remove_duplicate=False))
    entries, why = [], {}
    for key in reader.keys():
        name, copy = _map_key(key, None, params)
        if name is None:
            why[key] = copy
        else:  # a whole model is converted: a tied copy that differs would change it, so it is an error
            entries.append(_Entry(0, key, name, copy=copy, strict=True))
    try:
        report = _fill(model, [reader], entries, [why])
    except ValueError as e:
        # Both stacks' copies of a BERTShare tensor, and they differ: what transformers 5 makes of a BERTShare it
        # fine-tunes (it keeps the key in config.json but has no tie_encoder_decoder, so the copies drift apart).
        copies_differ = re.search(r"cannot convert: (encoder|decoder\.bert)\.\S+ should repeat", str(e))
        if config.tie_encoder_decoder and copies_differ:
            raise ValueError(f"{e}. {src_dir / 'config.json'} sets tie_encoder_decoder, but the file's encoder and "
                             "decoder copies of a shared tensor differ, as when transformers 5 (which keeps the key "
                             "but no longer ties the two stacks) fine-tuned it: set tie_encoder_decoder to false in "
                             "config.json to convert it as the BERT2BERT it now is") from None
        raise
    report.notes[:0] = notes
    model.eval()
    return (model, report) if output_loading_info else model


def load_minis2s(model_dir, attn_implementation: str | None = None, model_cls=Bert2Bert) -> Bert2Bert:
    """A minis2s checkpoint directory, read tensor by tensor into an uninitialised model (one model's memory)."""
    model_dir = Path(model_dir)
    config = EncoderDecoderConfig.from_dict(read_json(model_dir / "config.json"))
    if attn_implementation is not None:
        config.encoder.attn_implementation = config.decoder.attn_implementation = attn_implementation
    if is_hf_layout(model_dir):
        raise ValueError(f"{model_dir} holds transformers' key names (decoder.bert.*); convert it with from_hf / from-hf")
    model = _skeleton(config, model_cls)
    reader = WeightFiles(model_dir)
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = {k: tuple(p.shape) for k, p in model.named_parameters()}  # each shared tensor once
    check_state(expected, {k: reader.shape(k) for k in reader.keys()}, source=f"{model_dir}")
    _fill(model, [reader], [_Entry(0, k, k) for k in reader.keys()], [{}], source_name=str)
    return model.eval()


def hf_config_dict(config: EncoderDecoderConfig, dtype: torch.dtype = torch.float32) -> dict:
    """config.json as transformers' EncoderDecoderConfig writes it (nested BertConfigs, special ids at the top)."""
    d = config.to_dict()
    for part in ("encoder", "decoder"):
        d[part].pop("attn_implementation", None)  # a load-time choice in transformers, not a config field
    # minis2s's LM head always projects with the decoder's word embeddings. transformers ties them by default;
    # written out, so that no version's default can untie them (from_hf refuses a file that says false).
    d["decoder"]["tie_word_embeddings"] = True
    d["dtype"] = str(dtype).removeprefix("torch.")
    return d


def to_hf(model: Bert2Bert, out_dir, tokenizer_dir=None, force: bool = False) -> ConversionReport:
    """Write `model` as transformers' `EncoderDecoderModel.save_pretrained` would: config.json, generation_config.json,
    model.safetensors with transformers' key names, and the tokenizer files found in `tokenizer_dir`.

    Like transformers, the tied LM projection (`decoder.cls.predictions.decoder.*`) is not written. A shared
    (BERTShare) tensor is written under both its names, the encoder's (`encoder.*`) and the decoder's
    (`decoder.bert.*`), and config.json keeps `tie_encoder_decoder`, so that both major versions load the directory
    with no missing or unexpected key and the same outputs: transformers 4.x expects both names and ties them again
    on load (one tensor); 5.x has no tie_encoder_decoder and loads an untied model, which needs the encoder's copy
    (written once, under the decoder's name only, 5.x would leave the encoder randomly initialised).
    """
    report = ConversionReport()
    tensors, names = {}, defaultdict(list)
    # Adapter parameters are named "...layers.{i}.adapters.{site}.{adapter name}.{tensor}".
    adapters = sorted({n.split(".adapters.")[1].split(".")[1] for n, _ in model.named_parameters() if ".adapters." in n})
    if adapters:  # the base model goes to transformers; adapters travel on their own, as adapters-library files
        report.notes.append(f"adapters not written ({', '.join(adapters)}): save them with save_adapter, which "
                            "the adapters library loads")
    for name, p in model.named_parameters(remove_duplicate=False):
        if ".adapters." not in name:
            names[id(p)].append(name)
    params = {id(p): p for p in model.parameters()}
    unmapped = [n for ns in names.values() for n in ns if to_hf_name(n) is None]
    if unmapped:
        raise ValueError(f"{len(unmapped)} tensor(s) have no transformers counterpart: {', '.join(unmapped[:10])}")
    sr = SourceReport("minis2s model", [str(Path(out_dir) / "model.safetensors")])
    shared = 0
    for pid, ns in names.items():
        if len(ns) > 1 and not model.config.tie_encoder_decoder:
            raise ValueError(f"{' and '.join(ns)} share one tensor but config.tie_encoder_decoder is False")
        for i, n in enumerate(ns):  # BERTShare: one entry per name (see the docstring)
            # safetensors refuses two entries on one storage: the second name gets a copy, made only here
            tensors[to_hf_name(n)] = params[pid] if i == 0 else params[pid].detach().clone()
            sr.used[n] = [to_hf_name(n)]
        shared += len(ns) > 1
    report.sources.append(sr)
    if shared:
        report.notes.append(f"BERTShare: the {shared} shared tensors are written under both the encoder's and the "
                            "decoder's names (transformers 4.x ties them again on load; 5.x, which has no "
                            "tie_encoder_decoder, loads them as two equal copies)")
    report.notes.append("decoder.cls.predictions.decoder.{weight,bias} are not written: transformers ties them to "
                        "decoder.bert.embeddings.word_embeddings.weight and decoder.cls.predictions.bias")
    cfg = model.config
    with atomic_directory(out_dir, force=force) as tmp:
        write_json(tmp / "config.json", hf_config_dict(cfg, model.dtype))
        write_json(tmp / "generation_config.json", {k: getattr(cfg, k) for k in SPECIAL_TOKENS})
        write_safetensors(tmp / "model.safetensors", tensors)
        copied = copy_tokenizer_files(tokenizer_dir, tmp) if tokenizer_dir is not None else []
    if copied:
        report.notes.append(f"copied {', '.join(copied)}")
    return report


def copy_tokenizer_files(src_dir, dst_dir) -> list[str]:
    """Copy vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json where present; return their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src_dir) / name).is_file():
            shutil.copyfile(Path(src_dir) / name, Path(dst_dir) / name)
            copied.append(name)
    return copied


def save_minis2s(model: Bert2Bert, out_dir, tokenizer_dir=None, force: bool = True) -> list[str]:
    """`config.json` + `model.safetensors` (each shared tensor once, adapters left out: `save_adapter` writes them)
    and the tokenizer files of `tokenizer_dir`, into `out_dir` in one atomic step; returns the files copied."""
    base = {k: v for k, v in unique_state(model).items() if ".adapters." not in k}
    with atomic_directory(out_dir, force=force) as tmp:
        write_json(tmp / "config.json", model.config.to_dict())
        write_safetensors(tmp / "model.safetensors", base)
        return copy_tokenizer_files(tokenizer_dir, tmp) if tokenizer_dir is not None else []
