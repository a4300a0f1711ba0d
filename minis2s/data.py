"""The docstring-naming task (a seq2seq task that needs no download), data files of one's own, and batches.

    source: "Square of the standard deviation."                       target: "variance"
    source: "Return a string that identifies the current platform."   target: "get platform"

`build_docstring_task` collects the standard library's docstrings in a child process and makes pairs of them; why,
how, sizes and scores: docs/training.md. Shape legend: B batch, S source length, T target length.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import inspect
import io
import json
import os
import pkgutil
import random
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Container, Iterator, Sequence
from itertools import accumulate, combinations, takewhile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

# The collector runs this file as a script: only the standard library may be imported at run time (importing torch
# replaces inspect.getfile: a pair disappears), so no files.py either. The collator's tensors come from the tokenizer.
if TYPE_CHECKING:
    import torch

SPLITS = ("train", "validation", "test")
DATA_VERSION = 2  # bump when the recipe below changes, so old caches are not reused

# Never imported: GUIs, side effects on import (antigravity opens a browser), tests, installers, distutils.
_SKIP_MODULES = frozenset("antigravity this __hello__ __phello__ idlelib tkinter turtle turtledemo readline pydoc_data "
                          "rlcompleter test lib2to3 ensurepip venv distutils msilib winreg winsound msvcrt nt".split())
_SKIP_PARTS = frozenset({"test", "tests", "idle_test"})  # submodule path components never imported

_MIN_WORDS, _MAX_WORDS = 3, 48  # 48 words ~ 64 WordPiece tokens (1.3 tokens per word on average)
_SIGNATURE = re.compile(r"^[\w.\[\]]+\(.*\)\s*(->.*)?$")  # "S.join(iterable) -> str", "Point(x, y)"
_BOILERPLATE = re.compile(r"^Alias for field number \d+$")  # namedtuple fields: says nothing


class Pair(NamedTuple):  # one training example: the text to read and the text to write
    source: str
    target: str


def normalise(text: str) -> str:
    """Lower-case alphanumeric words joined by single spaces, the key for deduplication and splits:
    "Return  the SIZE, of x." -> "return the size of x"."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def name_to_words(name: str) -> str:
    """Split an identifier at underscores and case changes, lower-cased.
    "get_terminal_size" -> "get terminal size";  "HTTPServer" -> "http server";  "v6_int" -> "v6 int"""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)  # camelCase -> camel Case
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name)  # HTTPServer -> HTTP Server
    return " ".join(w.lower() for w in re.split(r"[^A-Za-z0-9]+", name) if w)


def clean_docstring(doc: str) -> str:
    """First paragraph of a docstring, signature lines removed, whitespace collapsed:
    "int(x=0) -> integer\\n\\nConvert a number\\n   to an integer.\\n\\nMore." -> "Convert a number to an integer."""
    lines = [line.strip() for line in doc.expandtabs().splitlines()]
    while lines and (not lines[0] or lines[0] == "--" or _SIGNATURE.match(lines[0])):
        lines.pop(0)  # leading blanks, signature lines, and the "--" that ends C signatures
    return " ".join(" ".join(lines[: lines.index("")] if "" in lines else lines).split())  # the first paragraph


def mentions_name(source: str, target: str) -> bool:
    """True when consecutive words of the source, glued together, spell the target name glued together.
    ("Close the file.", "close") -> True;  ("Like get_terminal_size() ...", "get terminal size") -> True;
    ("Return the integer ratio.", "as integer ratio") -> False;  ("Put together the parts.", "get") -> False"""
    name, words = target.replace(" ", ""), name_to_words(source).split()  # also splits get_x, getX in the source
    # From each word on, glue the next ones while they still spell the start of the name.
    return any(glued == name for i in range(len(words)) for glued in takewhile(name.startswith, accumulate(words[i:])))


def split_of(source: str) -> str:
    """Train/validation/test (80/10/10) by sha256 of the normalised source: unlike hash(), the same in every process."""
    bucket = int.from_bytes(hashlib.sha256(normalise(source).encode("utf-8")).digest()[:8], "big") % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def near_duplicates(a: str, b: str) -> bool:
    """Jaccard similarity of the normalised word sets >= 0.7.
    ("Return the hyperbolic tangent of x.", "Return the hyperbolic tangent of z.") -> True   (5/7)
    ("Set the stream position.", "Move to new file position.") -> False                     (1/8)"""
    x, y = set(normalise(a).split()), set(normalise(b).split())
    return len(x & y) >= 0.7 * len(x | y)


def _collect_docstrings(out_path: str) -> None:
    """Child process: import the standard library, write its [module, qualname, kind, doc] rows to `out_path`."""
    modules, failed = {}, []

    def add(name):  # import quietly; any failure (ImportError, OSError, even SystemExit) skips the module
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                modules[name] = importlib.import_module(name)
        except BaseException:  # noqa: BLE001
            failed.append(name)
        return modules.get(name)

    for top in sorted(sys.stdlib_module_names):
        if top.startswith(("_", "xx")) or top in _SKIP_MODULES or (module := add(top)) is None:
            continue
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), top + ".", onerror=lambda _: None):
            if not any(p.startswith("_") or p in _SKIP_PARTS for p in info.name.split(".")):
                add(info.name)

    def defined_here(obj, module_name):  # or re-exported from a private module (heapq.heappush is _heapq's)
        home = getattr(obj, "__module__", None)
        return home in (module_name, None) or isinstance(home, str) and any(p.startswith("_") for p in home.split("."))

    rows, seen = [], set()
    for module_name in sorted(modules):
        for name, obj in sorted(vars(modules[module_name]).items()):
            if (name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj))
                    or not defined_here(obj, module_name) or id(obj) in seen):
                continue
            seen.add(id(obj))
            kind = "class" if inspect.isclass(obj) else "function"
            rows.append([module_name, name, kind, getattr(obj, "__doc__", None)])
            for attr, member in sorted(vars(obj).items()) if inspect.isclass(obj) else ():  # its own members only
                member = getattr(member, "__func__", member)  # unwrap classmethod / staticmethod
                if not attr.startswith("_") and (inspect.isroutine(member) or inspect.isdatadescriptor(member)):
                    kind = "method" if inspect.isroutine(member) else "attribute"
                    rows.append([module_name, f"{name}.{attr}", kind, getattr(member, "__doc__", None)])
    rows = [r for r in rows if isinstance(r[3], str) and r[3].strip()]
    Path(out_path).write_text(json.dumps({"rows": rows, "modules": len(modules), "failed": failed}), encoding="utf-8")


def make_pairs(rows: Sequence[Sequence[str]]) -> list[dict]:
    """[module, qualname, kind, doc] rows -> clean, leak-free, deduplicated records with a split (docs/training.md)."""
    by_key: dict[str, list[dict]] = {}
    for module, qualname, kind, doc in rows:
        source, target = clean_docstring(doc), name_to_words(qualname.rsplit(".", 1)[-1])
        if target and _MIN_WORDS <= len(source.split()) <= _MAX_WORDS and not _BOILERPLATE.match(source) \
                and not mentions_name(source, target):
            record = {"source": source, "target": target, "module": module, "qualname": qualname, "kind": kind}
            by_key.setdefault(normalise(source), []).append(record)
    by_target: dict[str, list[dict]] = {}
    for key in sorted(by_key):
        if len({r["target"] for r in by_key[key]}) == 1:  # else ambiguous: one text, two names
            by_target.setdefault(by_key[key][0]["target"], []).append(by_key[key][0])
    # Near-duplicates naming the same thing share a split, else the answer leaks from train to test. group[i]: the
    # first record linked to record i, directly or through a chain (records are sorted: the group's smallest key).
    records = []
    for same in by_target.values():
        group = list(range(len(same)))
        for i, j in combinations(range(len(same)), 2):
            if group[i] != group[j] and near_duplicates(same[i]["source"], same[j]["source"]):
                old, new = max(group[i], group[j]), min(group[i], group[j])
                group = [new if g == old else g for g in group]
        records += [{**record, "split": split_of(same[g]["source"])} for record, g in zip(same, group)]
    return sorted(records, key=lambda r: (r["module"], r["qualname"]))


def _task_dir(cache_dir: str | os.PathLike | None) -> Path:
    """`cache_dir` (else $MINIS2S_CACHE_DIR, else ~/.cache/minis2s) / docstrings-v2-cpython3.11.7-linux."""
    root = Path(cache_dir if cache_dir is not None
                else os.environ.get("MINIS2S_CACHE_DIR") or Path.home() / ".cache" / "minis2s")
    version = ".".join(map(str, sys.version_info[:3]))
    return root / f"docstrings-v{DATA_VERSION}-{sys.implementation.name}{version}-{sys.platform}"


def build_docstring_task(cache_dir: str | os.PathLike | None = None, *, vocab: Container[str] | None = None,
                         rebuild: bool = False) -> dict[str, list[Pair]]:
    """The docstring-naming task, {"train": [Pair, ...], "validation": ..., "test": ...}, built once into `_task_dir`
    as {split}.jsonl and meta.json, then read. `vocab`: keep only names made of its whole words (`names_in_vocab`)."""
    final = _task_dir(cache_dir)
    if rebuild and final.exists():
        shutil.rmtree(final)
    if not (final / "meta.json").exists():
        # Built beside `final` and renamed; not files.atomic_directory, which would swap out a directory another
        # builder (a DDP rank) may be reading: here the first builder to finish wins and the others drop their copy.
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
        try:  # `_collect_docstrings` in `python -I -W ignore data.py --collect OUT`: no PYTHONPATH, no display
            env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
            out = tmp / "raw.json"
            cmd = [sys.executable, "-I", "-W", "ignore", os.path.abspath(__file__), "--collect", str(out)]
            proc = subprocess.run(cmd, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=300, cwd=str(tmp))
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"collecting docstrings failed (exit code {proc.returncode}): {' '.join(cmd)}\n"
                                   f"{proc.stderr[-2000:]}")
            raw = json.loads(out.read_text(encoding="utf-8"))
            records = make_pairs(raw["rows"])
            for split in SPLITS:
                lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records if r["split"] == split]
                (tmp / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
            meta = {"data_version": DATA_VERSION, "python": sys.version, "platform": sys.platform,
                    "counts": {split: sum(r["split"] == split for r in records) for split in SPLITS},
                    "raw_docstrings": len(raw["rows"]), "modules_imported": raw["modules"],
                    "modules_failed": raw["failed"]}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            os.remove(out)
            try:
                os.rename(tmp, final)  # atomic; fails if another process finished first
            except OSError:
                if not (final / "meta.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    splits = {split: load_pairs(final / f"{split}.jsonl") for split in SPLITS}
    return splits if vocab is None else {split: names_in_vocab(pairs, vocab) for split, pairs in splits.items()}


def names_in_vocab(pairs: Sequence[Pair], vocab: Container[str]) -> list[Pair]:
    """Pairs whose target words are all whole tokens of `vocab`: "get terminal size" stays, "tanh" (tan ##h) goes."""
    return [p for p in pairs if all(word in vocab for word in p[1].split())]


def load_pairs(path: str | os.PathLike) -> list[Pair]:
    """Pairs from a `.jsonl` file ({"source": ..., "target": ...} a line) or a `.tsv` file (source<TAB>target, maybe
    under a header `source<TAB>target`); blank lines are skipped, anything else raises naming the file and line."""
    path, kind = Path(path), Path(path).suffix.lower()
    if kind not in (".jsonl", ".tsv"):
        raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected .jsonl or .tsv")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as e:
        offset = e.start + len(data) - len(e.object)  # e.start counts from after a byte-order mark
        line, bad = data.count(b"\n", 0, offset) + 1, f"byte 0x{data[offset]:02x} at byte offset {offset}"
        raise ValueError(f"{path}, line {line}: not UTF-8 ({bad})") from None
    pairs, first = [], True
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): it also splits at \x0c, \u2028 ...
        if not line.strip():
            continue
        where, line, is_first, first = f"{path}, line {number}", line.rstrip("\r"), first, False
        if kind == ".tsv":
            if len(columns := line.split("\t")) != 2:
                raise ValueError(f"{where}: expected 2 tab-separated columns (source, target), found {len(columns)}")
            if is_first and [c.strip().lower() for c in columns] == ["source", "target"]:
                continue  # a header
            source, target = columns
        else:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, found {type(record).__name__}")
            if missing := [k for k in ("source", "target") if k not in record]:
                raise ValueError(f"{where}: missing key {missing[0]!r} (keys found: {sorted(record)})")
            source, target = record["source"], record["target"]
        for key, value in (("source", source), ("target", target)):
            if not isinstance(value, str):
                raise ValueError(f"{where}: {key!r} must be a string, found {type(value).__name__}")
            if not value.strip():
                raise ValueError(f"{where}: empty {key}")
        pairs.append(Pair(source, target))
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return pairs


class Seq2SeqCollator:
    """Pairs -> {"input_ids": (B, S), "attention_mask": (B, S), "labels": (B, T)} as torch tensors. Labels are the
    target ids without the [CLS] that shift_tokens_right puts back, padded with -100 (the loss's ignore_index):
        ids    [CLS]  a  b  [SEP] [PAD]   ->   labels  a  b  [SEP]  -100
    max_source_len counts [CLS] and [SEP]; max_target_len counts [SEP] (the [CLS] is dropped)."""

    def __init__(self, tokenizer, max_source_len: int = 64, max_target_len: int = 16):
        self.tokenizer, self.max_source_len, self.max_target_len = tokenizer, max_source_len, max_target_len

    def __call__(self, pairs: Sequence[Pair]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([p[0] for p in pairs], padding=True, truncation=True, max_length=self.max_source_len,
                             return_tensors="pt")
        dec = self.tokenizer([p[1] for p in pairs], padding=True, truncation=True,  # +1: the [CLS] dropped below
                             max_length=self.max_target_len + 1, return_tensors="pt")  # truncation keeps [SEP]
        ids, mask, cls = dec["input_ids"], dec["attention_mask"], self.tokenizer.cls_token_id  # (B, T+1)
        if not bool((ids[:, 0] == cls).all()):
            raise ValueError(f"targets must be tokenised as [CLS] ... [SEP]; first ids are {ids[:, 0].tolist()}, "
                             f"[CLS] is {cls}")
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # (B, T)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def iterate_batches(pairs: Sequence[Pair], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                    epoch: int = 0, sort_window: int = 1, rank: int = 0, world_size: int = 1,
                    drop_last: bool = False) -> Iterator[list[Pair]]:
    """One epoch of batches, the same on every run, machine and rank (shuffling, sort_window: docs/training.md); rank r
    of world_size takes every world_size-th batch of a list cut to a multiple of world_size.
        5 pairs, batch_size 2, no shuffle: [p0 p1] [p2 p3] [p4];  rank 1 of 2 gets [p2 p3]"""
    if batch_size < 1 or sort_window < 1:
        raise ValueError(f"batch_size and sort_window must be >= 1, got {batch_size} and {sort_window}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    rng = random.Random(f"{seed}/{epoch}")  # str seeds are hashed with sha512: stable everywhere
    order = list(range(len(pairs)))
    if shuffle:
        rng.shuffle(order)
    batches, window = [], batch_size * sort_window
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        if sort_window > 1:
            chunk.sort(key=lambda i: len(pairs[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()  # only the last batch cut can be short, whatever sort_window is
    if shuffle and sort_window > 1:
        rng.shuffle(batches)
    for batch in batches[: len(batches) - len(batches) % world_size][rank::world_size]:
        yield [pairs[i] for i in batch]


def main() -> None:
    """`python -m minis2s.data [--cache-dir DIR] [--vocab vocab.txt]`: build (or read) the task, print its counts."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cache-dir")
    parser.add_argument("--vocab", help="a vocab.txt: keep only names made of its whole words")
    args = parser.parse_args()
    vocab = None if args.vocab is None else set(Path(args.vocab).read_text(encoding="utf-8").splitlines())
    splits = build_docstring_task(args.cache_dir, vocab=vocab)
    print(_task_dir(args.cache_dir))
    for split, pairs in splits.items():
        words_s, words_t = (sum(len(p[i].split()) for p in pairs) / len(pairs) for i in (0, 1))  # per source, target
        print(f"{split:>10}: {len(pairs):5d} pairs, mean words: source {words_s:.1f}, target {words_t:.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--collect"]:
        _collect_docstrings(sys.argv[2])
    else:
        main()
