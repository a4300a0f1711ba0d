"""Data for minis2s: a real sequence-to-sequence task that needs no download, file loading, batching.

The task: **name a function from its docstring.** Every Python installation carries a few thousand documented
functions, classes, methods and attributes. The source is the first paragraph of one docstring, the target is the
object's name split into lower-case words:

    source: "Square of the standard deviation."                       target: "variance"
    source: "Return a string that identifies the current platform."   target: "get platform"

Why this task, and why only names made of English words. With the bert-base-uncased vocabulary (MiniLM's), sources
are 16 tokens on average with [CLS]/[SEP] (99% within 64) and labels 3-4 tokens with [SEP]: cheap enough for a
comparison of ~4 CPU minutes per configuration ("one-line summary from the rest of the docstring" has sources of 79
tokens on average: far slower per step). Measured on the validation split (transformers' EncoderDecoderModel,
MiniLM-L6 bert2bert warm-started vs the same config randomly initialised; AdamW lr 3e-4, 30 warm-up steps, batch 32,
300 steps, greedy decoding):

    names                     train pairs   ROUGE-1 / 2 / L x100, warm | random     exact match   val loss
    all                       3,028          5.2 / 0.1 / 5.2  |  4.2 / 0.0 / 4.2     0.2% | 0%     4.42 | 5.17
    whole vocabulary words    1,315         39.6 / 17.8 / 39.6 | 5.5 / 0.0 / 5.5     19.0% | 0%    3.10 | 4.55

Abbreviations (`tanh` = "tan ##h", `getaddrinfo`) cannot be learnt from English in a few minutes; restricted to
names made of whole vocabulary words (`names_in_vocab`) the warm-started model names unseen functions ("Use local
file." -> "open file" for `open_local_file`), while the random one answered "get server" to every example we looked
at (in 300 steps the smaller set is seen 8 times, the full one 3: part of the gap). Reading the English of the
source is what warm-starting brings (Rothe et al. 2020, arXiv 1907.12461).

How the pairs are made (`build_docstring_task`):
  1. A child process (`python -I -W ignore data.py --collect OUT`) imports every public module of the standard
     library and its public submodules, minus `_SKIP_MODULES`: an import may print, change global state or crash;
     -I ignores PYTHONPATH and the working directory (a user's `random.py` cannot shadow the standard library), and
     DISPLAY is unset, so no window can open.
  2. Each docstring's signature lines are dropped and its first paragraph kept (`clean_docstring`); sources of
     fewer than 3 or more than 48 words (~64 WordPiece tokens) are dropped, and so are sources that spell the name
     (`mentions_name`: "Close the file." is no exercise for `close`).
  3. A normalised source (`normalise`) naming two different things is ambiguous and dropped; duplicates are kept once.
  4. Split by a stable hash of the normalised source (`split_of`): 80% train, 10% validation, 10% test.
     Near-duplicates naming the same thing ("... tangent of x." / "... of z.") take the split of the group's first
     source, so no answer leaks from train to test; a machine that lacks a module loses its pairs only.
  5. Cached as JSONL under `~/.cache/minis2s/` (or `cache_dir`, or $MINIS2S_CACHE_DIR) in a folder named after the
     Python version, built in a temporary folder renamed into place: concurrent builders never see half a data set.

On CPython 3.11.7 / Linux: 3,792 pairs, 3,028 train / 412 validation / 352 test; with the bert-base-uncased
vocabulary filter 1,315 / 179 / 168 (`python -m minis2s.data --vocab vocab.txt` prints the counts). Docstrings
change between Python releases: results compare only on the same Python version (`meta.json` records it).

Files of one's own (`load_pairs`): JSONL (`{"source": ..., "target": ...}` per line) or TSV (two tab-separated
columns, optional header line `source<TAB>target`). Batches (`Seq2SeqCollator`, `iterate_batches`): labels are the
target ids without the leading [CLS], padding set to -100. Shape legend: B batch, S source length, T target length.
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
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

# This file runs as a script in the docstring collector's child process, so it imports nothing outside the standard
# library at run time: third-party imports change the data (importing torch first replaces inspect.getfile, and that
# pair disappears) and cost seconds. The collator's tensors come from the tokenizer. Hence also no files.py here.
if TYPE_CHECKING:
    import torch

SPLITS = ("train", "validation", "test")
DATA_VERSION = 2  # bump when the recipe below changes, so old caches are not reused

# Modules never imported: GUI (tkinter, turtle, idlelib), side effects on import (antigravity opens a
# browser, this/__hello__ print, readline may write terminal escapes), tests and installers, and
# distutils (setuptools replaces it with its own copy, so its docstrings depend on the environment).
_SKIP_MODULES = frozenset({
    "antigravity", "this", "__hello__", "__phello__", "idlelib", "tkinter", "turtle", "turtledemo",
    "readline", "rlcompleter", "test", "lib2to3", "ensurepip", "venv", "pydoc_data", "distutils",
    "msilib", "winreg", "winsound", "msvcrt", "nt",
})
_SKIP_PARTS = frozenset({"test", "tests", "idle_test"})  # submodule path components never imported

_MIN_WORDS, _MAX_WORDS = 3, 48  # 48 words ~ 64 WordPiece tokens (1.3 tokens per word on average)
_SIGNATURE = re.compile(r"^[\w.\[\]]+\(.*\)\s*(->.*)?$")  # "S.join(iterable) -> str", "Point(x, y)"
_BOILERPLATE = re.compile(r"^Alias for field number \d+$")  # namedtuple fields: says nothing


class Pair(NamedTuple):
    """One training example: the text to read and the text to write."""

    source: str
    target: str


# -- Text helpers: pure functions, each with its worked example ------------------------------------------------------

def normalise(text: str) -> str:
    """Lower-case alphanumeric words joined by single spaces, the key for deduplication and splits:
    "Return  the SIZE, of x." -> "return the size of x"."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def name_to_words(name: str) -> str:
    """Split an identifier at underscores and case changes, lower-cased.

    "get_terminal_size" -> "get terminal size";  "HTTPServer" -> "http server";
    "assertWarnsRegex" -> "assert warns regex";  "v6_int_to_packed" -> "v6 int to packed"
    """
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)  # camelCase -> camel Case
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name)  # HTTPServer -> HTTP Server
    return " ".join(w.lower() for w in re.split(r"[^A-Za-z0-9]+", name) if w)


def clean_docstring(doc: str) -> str:
    """First paragraph of a docstring, signature lines removed, whitespace collapsed.

    "int(x=0) -> integer\\n\\nConvert a number\\n   to an integer.\\n\\nMore." -> "Convert a number to an integer."
    """
    lines = [line.strip() for line in doc.expandtabs().splitlines()]
    while lines and (not lines[0] or lines[0] == "--" or _SIGNATURE.match(lines[0])):
        lines.pop(0)  # leading blanks, signature lines, and the "--" that ends C signatures
    paragraph = lines[: lines.index("")] if "" in lines else lines
    return " ".join(" ".join(paragraph).split())


def mentions_name(source: str, target: str) -> bool:
    """True when consecutive words of the source, glued together, spell the target name glued together.

    ("Close the file.", "close") -> True;  ("Return the integer ratio.", "as integer ratio") -> False
    ("Like get_terminal_size() ...", "get terminal size") -> True   (also getTerminalSize, "terminal size")
    ("A decorator indicating abstract staticmethods.", "abstractstaticmethod") -> False  (plural)
    """
    name = target.replace(" ", "")
    words = name_to_words(source).split()  # also splits identifiers in the source: get_x, getX
    for i in range(len(words)):
        glued = ""
        for word in words[i:]:
            glued += word
            if glued == name:
                return True
            if not name.startswith(glued):
                break
    return False


def split_of(source: str) -> str:
    """Train/validation/test (80/10/10) from sha256 of the normalised source: same text, same split, on every
    machine and in every process (the built-in hash() is salted per process)."""
    digest = hashlib.sha256(normalise(source).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def near_duplicates(a: str, b: str) -> bool:
    """Jaccard similarity of the normalised word sets >= 0.7.

    ("Return the hyperbolic tangent of x.", "Return the hyperbolic tangent of z.") -> True   (5/7)
    ("Set the stream position.", "Move to new file position.") -> False                     (1/8)
    """
    x, y = set(normalise(a).split()), set(normalise(b).split())
    return len(x & y) >= 0.7 * len(x | y)


# -- Collecting docstrings (runs in a child process, see the module docstring) ---------------------------------------

def _collect_docstrings(out_path: str) -> None:
    """Child process: import the standard library and write [module, qualname, kind, doc] rows."""
    def quiet_import(name):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                return importlib.import_module(name)
        except BaseException:  # noqa: BLE001 -- ImportError, OSError, SystemExit: skip the module
            return None

    modules, failed = {}, []
    for top in sorted(sys.stdlib_module_names):
        if top.startswith(("_", "xx")) or top in _SKIP_MODULES:
            continue
        module = quiet_import(top)
        if module is None:
            failed.append(top)
            continue
        modules[top] = module
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), top + ".", onerror=lambda _: None):
            parts = info.name.split(".")
            if any(p.startswith("_") or p in _SKIP_PARTS for p in parts):
                continue
            sub = quiet_import(info.name)
            if sub is None:
                failed.append(info.name)
            else:
                modules[info.name] = sub

    def defined_here(obj, module_name):
        # Keep objects the module defines or re-exports from a private module (heapq.heappush comes
        # from _heapq); skip re-exports of other public modules, which are collected there.
        home = getattr(obj, "__module__", None)
        return home == module_name or home is None or (
            isinstance(home, str) and any(p.startswith("_") for p in home.split(".")))

    rows, seen = [], set()
    for module_name in sorted(modules):
        for name, obj in sorted(vars(modules[module_name]).items()):
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
                continue
            if not defined_here(obj, module_name) or id(obj) in seen:
                continue
            seen.add(id(obj))
            kind = "class" if inspect.isclass(obj) else "function"
            rows.append([module_name, name, kind, getattr(obj, "__doc__", None)])
            if not inspect.isclass(obj):
                continue
            for attr, member in sorted(vars(obj).items()):  # the class's own members only
                member = getattr(member, "__func__", member)  # unwrap classmethod / staticmethod
                if attr.startswith("_") or not (inspect.isroutine(member) or inspect.isdatadescriptor(member)):
                    continue
                kind = "method" if inspect.isroutine(member) else "attribute"
                rows.append([module_name, f"{name}.{attr}", kind, getattr(member, "__doc__", None)])

    rows = [r for r in rows if isinstance(r[3], str) and r[3].strip()]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "modules": len(modules), "failed": failed}, f)


def _run_collector(workdir: str) -> dict:
    out_path = os.path.join(workdir, "raw.json")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    cmd = [sys.executable, "-I", "-W", "ignore", os.path.abspath(__file__), "--collect", out_path]
    proc = subprocess.run(cmd, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=300, cwd=workdir)
    if proc.returncode != 0 or not os.path.exists(out_path):
        raise RuntimeError(f"collecting docstrings failed (exit code {proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stderr[-2000:]}")
    with open(out_path, encoding="utf-8") as f:
        return json.load(f)


def make_pairs(rows: Sequence[Sequence[str]]) -> list[dict]:
    """Raw [module, qualname, kind, doc] rows -> cleaned, leak-free, deduplicated records with a split.

    Each record is {"source", "target", "split", "module", "qualname", "kind"}; see the module docstring.
    """
    by_key: dict[str, list[dict]] = {}
    for module, qualname, kind, doc in rows:
        source = clean_docstring(doc)
        target = name_to_words(qualname.rsplit(".", 1)[-1])
        if not target or not _MIN_WORDS <= len(source.split()) <= _MAX_WORDS:
            continue
        if _BOILERPLATE.match(source) or mentions_name(source, target):
            continue
        record = {"source": source, "target": target, "module": module, "qualname": qualname, "kind": kind}
        by_key.setdefault(normalise(source), []).append(record)
    by_target: dict[str, list[dict]] = {}
    for key in sorted(by_key):
        if len({r["target"] for r in by_key[key]}) == 1:  # else ambiguous: one text, two names
            by_target.setdefault(by_key[key][0]["target"], []).append(by_key[key][0])
    # Near-duplicates that name the same thing (str/bytes twins, math.tanh/cmath.tanh) share one split,
    # else the answer leaks from train to test. group[i] = index of the first record linked to record i,
    # directly or through a chain; records are in sorted order, so that is the group's smallest key.
    records = []
    for same_target in by_target.values():
        group = list(range(len(same_target)))
        for j in range(len(same_target)):
            for i in range(j):
                if group[i] != group[j] and near_duplicates(same_target[i]["source"], same_target[j]["source"]):
                    old, new = max(group[i], group[j]), min(group[i], group[j])
                    group = [new if g == old else g for g in group]
        for record, g in zip(same_target, group):
            records.append({**record, "split": split_of(same_target[g]["source"])})
    return sorted(records, key=lambda r: (r["module"], r["qualname"]))


# -- Building, caching and loading -----------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """$MINIS2S_CACHE_DIR if set, else ~/.cache/minis2s."""
    return Path(os.environ.get("MINIS2S_CACHE_DIR") or Path.home() / ".cache" / "minis2s")


def _task_dir(cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    version = ".".join(map(str, sys.version_info[:3]))
    return root / f"docstrings-v{DATA_VERSION}-{sys.implementation.name}{version}-{sys.platform}"


def build_docstring_task(cache_dir: str | os.PathLike | None = None, *, vocab: Container[str] | None = None,
                         rebuild: bool = False) -> dict[str, list[Pair]]:
    """The docstring-naming task as {"train": [...], "validation": [...], "test": [...]} of Pairs.

    Built once (a few seconds) and cached as `<cache_dir>/docstrings-v2-cpython3.11.7-linux/{split}.jsonl` plus
    `meta.json` (counts, Python version, modules that failed to import). Later calls read the cache. vocab: keep
    only names made of whole words of this WordPiece vocabulary (`names_in_vocab`), the setting the module docstring
    measured, e.g. `tokenizer.backend_tokenizer.get_vocab()`; filtering never moves a pair to another split.
    """
    final = _task_dir(cache_dir)
    if rebuild and final.exists():
        shutil.rmtree(final)
    if not (final / "meta.json").exists():
        # Built beside `final` and renamed. Not files.atomic_directory, which would swap out a directory that another
        # builder (a DDP rank) may be reading: here the first builder to finish wins and the others drop their copy.
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
        try:
            raw = _run_collector(str(tmp))
            records = make_pairs(raw["rows"])
            counts = {split: sum(r["split"] == split for r in records) for split in SPLITS}
            for split in SPLITS:
                lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records if r["split"] == split]
                (tmp / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
            meta = {"data_version": DATA_VERSION, "python": sys.version, "platform": sys.platform,
                    "counts": counts, "raw_docstrings": len(raw["rows"]), "modules_imported": raw["modules"],
                    "modules_failed": raw["failed"]}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            os.remove(tmp / "raw.json")
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
    """Pairs whose target words are all whole tokens of `vocab` (a dict token -> id, or a set).

    With bert-base-uncased's vocabulary: "clear frames", "get terminal size" stay; "tanh" (tan ##h),
    "getaddrinfo" and "isalnum" go: abbreviations a model cannot learn from English in a few minutes.
    """
    return [p for p in pairs if all(word in vocab for word in p[1].split())]


def load_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read pairs from a `.jsonl` file (objects with string keys "source" and "target"; other keys are ignored) or a
    `.tsv` file (source<TAB>target, an optional first line `source<TAB>target` is a header). Blank lines are skipped;
    anything else that is not a pair raises ValueError naming the file and the line."""
    path, kind = Path(path), Path(path).suffix.lower()
    if kind not in (".jsonl", ".tsv"):
        raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected .jsonl or .tsv")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as e:
        offset = e.start + len(data) - len(e.object)  # e.start counts from after a byte-order mark
        line = data.count(b"\n", 0, offset) + 1
        bad = f"byte 0x{data[offset]:02x} at byte offset {offset}"
        raise ValueError(f"{path}, line {line}: not UTF-8 ({bad})") from None
    pairs, first = [], True
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): it also splits at \x0c, \u2028 ...
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        is_first, first = first, False
        if kind == ".tsv":
            columns = line.split("\t")
            if len(columns) != 2:
                raise ValueError(f"{where}: expected 2 tab-separated columns (source, target), found {len(columns)}")
            if is_first and [c.strip().lower() for c in columns] == ["source", "target"]:
                continue  # header
            source, target = columns
        else:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, found {type(record).__name__}")
            missing = [k for k in ("source", "target") if k not in record]
            if missing:
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


# -- Batching --------------------------------------------------------------------------------------------------------

class Seq2SeqCollator:
    """Pairs -> {"input_ids": (B, S), "attention_mask": (B, S), "labels": (B, T)} as torch tensors.

    Targets are tokenised as "[CLS] a b c [SEP]". The decoder starts from decoder_start_token_id =
    [CLS] and `shift_tokens_right(labels)` prepends it, so the labels must not start with [CLS] again:
    labels = ids[1:] = "a b c [SEP]", and the decoder reads "[CLS] a b c" (as in transformers' EncoderDecoderModel).
        target "a b" in a batch whose longest target has 3 words:
        ids    [CLS]  a  b  [SEP] [PAD]   ->   labels  a  b  [SEP]  -100
    Padding positions are -100, never the pad id: the loss is CrossEntropyLoss(ignore_index=-100)
    over every position, and a raw pad id would be counted as a word to predict, teaching the model
    to emit [PAD] and diluting the loss (transformers issue #7896).
    """

    def __init__(self, tokenizer, max_source_len: int = 64, max_target_len: int = 16):
        self.tokenizer = tokenizer
        self.max_source_len = max_source_len  # S <= this, [CLS] and [SEP] included
        self.max_target_len = max_target_len  # T <= this, [SEP] included ([CLS] is dropped)

    def __call__(self, pairs: Sequence[Pair]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([p[0] for p in pairs], padding=True, truncation=True, max_length=self.max_source_len,
                             return_tensors="pt")
        # +1: the [CLS] that is dropped below. Truncation keeps [SEP] as the last real token.
        dec = self.tokenizer([p[1] for p in pairs], padding=True, truncation=True,
                             max_length=self.max_target_len + 1, return_tensors="pt")
        ids, mask = dec["input_ids"], dec["attention_mask"]  # (B, T+1)
        cls = self.tokenizer.cls_token_id
        if not bool((ids[:, 0] == cls).all()):
            raise ValueError(f"targets must be tokenised as [CLS] ... [SEP]; first ids are {ids[:, 0].tolist()}, "
                             f"[CLS] is {cls}")
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # (B, T)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def iterate_batches(pairs: Sequence[Pair], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                    epoch: int = 0, sort_window: int = 1, rank: int = 0, world_size: int = 1,
                    drop_last: bool = False) -> Iterator[list[Pair]]:
    """Deterministic batches of pairs for one epoch.

    shuffle:      order from random.Random(seed, epoch): the same on every run, machine and rank.
    sort_window:  >1 sorts each window of `sort_window` batches by source length before cutting it into
                  batches, then shuffles the batch order: less padding, still random. 1 = off.
    rank, world_size: DDP sharding. Every rank builds the same list of batches and takes every
                  world_size-th one; the list is first cut to a multiple of world_size so all ranks run
                  the same number of steps (up to world_size - 1 batches are left out of the epoch).
        5 pairs, batch_size 2, no shuffle: [p0 p1] [p2 p3] [p4];  rank 1 of 2 gets [p2 p3]
    """
    if batch_size < 1 or sort_window < 1:
        raise ValueError(f"batch_size and sort_window must be >= 1, got {batch_size} and {sort_window}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    rng = random.Random(f"{seed}/{epoch}")  # str seeds are hashed with sha512: stable everywhere
    order = list(range(len(pairs)))
    if shuffle:
        rng.shuffle(order)
    batches = []
    window = batch_size * sort_window
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        if sort_window > 1:
            chunk.sort(key=lambda i: len(pairs[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()  # only the last batch cut can be short, whatever sort_window is
    if shuffle and sort_window > 1:
        rng.shuffle(batches)
    batches = batches[: len(batches) - len(batches) % world_size]
    for batch in batches[rank::world_size]:
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
        words_s = sum(len(p.source.split()) for p in pairs) / len(pairs)
        words_t = sum(len(p.target.split()) for p in pairs) / len(pairs)
        print(f"{split:>10}: {len(pairs):5d} pairs, mean words: source {words_s:.1f}, target {words_t:.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--collect"]:
        _collect_docstrings(sys.argv[2])
    else:
        main()
