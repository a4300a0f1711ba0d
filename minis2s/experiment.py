"""The warm-starting experiment of Rothe, Narayan & Severyn 2020 (arXiv 1907.12461), at laptop scale.

On the docstring task (names of whole vocabulary words), with MiniLM's architecture and one training budget for all:

    random      Rnd2Rnd: MiniLM's architecture, BERT's random init
    bert2bert   encoder and decoder warm-started from all-MiniLM-L6-v2 (cross-attention and LM head new)
    bertshare   the same, encoder and decoder sharing every weight but cross-attention
    adapters    bert2bert frozen; Houlsby adapters (double_seq_bn, arXiv 1902.00751) and the new blocks trained

each scored on the test split (ROUGE-1/2/L, exact match). The work is fixed (388 steps x batch 32 per configuration,
234 with --quick), so the numbers reproduce on any machine; --minutes only caps the time. Design: docs/training.md.

    python -m minis2s experiment --out runs/experiment     the table (results.md), curves.png, samples.md, models
    python -m minis2s experiment --quick                   the "main job": bert2bert only, about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import torch

from . import add_adapter, load_tokenizer, train_adapter, warm_start
from .data import build_docstring_task
from .files import write_json, write_text
from .train import (TrainConfig, choose_threads, evaluate, fmt_time, generate_command, plot_curves, random_init_like,
                    resolve_checkpoint, scores_text, seed_everything, train)

CONFIGS = ("random", "bert2bert", "bertshare", "adapters")
STEPS = 388  # per configuration: the README's table (10% warm-up, 4 validation evaluations)
QUICK_STEPS = 234  # --quick: the README's main job (test ROUGE-1 30.9, exact match 8.9%)
LABELS = {"random": "Rnd2Rnd (random init)", "bert2bert": "BERT2BERT (warm-started)",
          "bertshare": "BERTShare (warm-started, shared)", "adapters": "BERT2BERT + adapters"}


def build(name: str, bert_dir: Path, seed: int, adapter: str = "double_seq_bn"):
    """The model of configuration `name`, ready to train (adapters: a frozen base; adapters, new blocks trainable)."""
    if name == "random":
        return random_init_like(bert_dir, seed=seed)
    model = warm_start(bert_dir, share=name == "bertshare", seed=seed)
    if name == "adapters":
        add_adapter(model, "task", adapter)
        # Cross-attention is new (random) in a warm-started model: frozen, it would stay random (adapters #575).
        # So is the LM head's transform when the checkpoint is a bare BertModel (MiniLM has no MLM head).
        train_adapter(model, "task", train_cross_attention=True, train_lm_head=True)
    return model


def machine() -> str:
    """"Intel(R) Xeon(R) Processor, 2 threads, torch 2.13.0, Python 3.11.7" (the GPU's name on CUDA)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu, n = (names or [platform.processor() or platform.machine()])[0], torch.get_num_threads()
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{cpu}, {n} thread{'s' * (n > 1)}"
    return f"{where}, torch {torch.__version__.split('+')[0]}, Python {platform.python_version()}"


def budget_hook(minutes: float, t_start: float, steps: int, n_configs: int, eval_seconds: float, probe: int = 6):
    """`--minutes` as train()'s on_step hook: a cap on the whole command, never a change of the work. At step `probe`
    the rest is estimated from the mean step time (the first step, which allocates, left out) and `eval_seconds`; a
    command that would not fit stops there (SystemExit) with one line saying what it needs."""
    seconds_at = {}

    def on_step(step: int, seconds: float) -> None:
        seconds_at[step] = seconds
        if step != min(probe, steps):
            return
        per_step = (seconds - seconds_at[1]) / (step - 1) if step > 1 else seconds
        left = per_step * (steps * n_configs - step) + eval_seconds + 5.0 * n_configs  # 5 s: build, write, plot
        if (total := time.perf_counter() - t_start + left) > 60 * minutes:
            raise SystemExit(f"error: this run needs about {total / 60:.1f} min on this machine ({per_step:.2f} s/step"
                             f" x {steps} steps x {n_configs} configuration(s), plus evaluation), more than --minutes"
                             f" {minutes:g}: give --minutes {math.ceil(1.2 * total / 60)} or leave --minutes out "
                             "(fewer --steps would change the results)")
    return on_step


def run(out_dir, configs=CONFIGS, steps: int = STEPS, minutes: float | None = None, batch_size: int = 32,
        lr: float = 3e-4, adapter_lr: float = 1e-3, warmup_frac: float = 0.1, adapter: str = "double_seq_bn",
        num_beams: int = 1, seed: int = 0, bert: str = "minilm", n_samples: int = 10, cache_dir=None,
        eval_examples: int = 96, task: dict | None = None, progress: bool = True, threads: str | None = None,
        save_models: bool = True) -> dict:
    """Train and test every configuration, `steps` each; write results.md/json, curves.png, samples.md and each model
    with its tokenizer (`<out_dir>/<config>/model`; the adapter in `<out_dir>/adapters/adapter`). `task`: {"train",
    "validation", "test"} pairs instead of the docstring task (tests); `threads`: what `choose_threads` said."""
    base = TrainConfig(batch_size=batch_size, lr=lr, seed=seed, eval_examples=eval_examples, progress=progress,
                       log_every=25, overwrite=True, save_checkpoints=False, steps=steps,  # checks steps >= 1
                       warmup=max(1, round(warmup_frac * steps)), eval_every=max(1, steps // 4))
    t_start, out = time.perf_counter(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    bert_dir = resolve_checkpoint(bert)
    tokenizer = load_tokenizer(bert_dir)
    if task is None:  # built once, then cached
        task = build_docstring_task(cache_dir, vocab=tokenizer.backend_tokenizer.get_vocab())
    log(f"docstring task (names of whole vocabulary words): {len(task['train'])} train / {len(task['validation'])} "
        f"validation / {len(task['test'])} test pairs")
    log(f"machine: {machine()}" + (f"\nthreads: {threads}" if threads else ""))
    log(f"the work: {len(configs)} configuration(s) x {steps} steps x global batch {batch_size}, then the test split")

    rows, logs, outputs, model_dirs = [], {}, {}, {}
    for name in configs:
        t0, on_step = time.perf_counter(), None
        seed_everything(seed)
        model = build(name, bert_dir, seed, adapter)
        if minutes is not None and not rows:  # time an evaluation (untrained: full-length outputs, a pessimistic rate)
            t_eval, few = time.perf_counter(), task["validation"][:32]
            evaluate(model, tokenizer, few, batch_size=base.eval_batch_size, max_source_len=base.max_source_len,
                     max_target_len=base.max_target_len, max_new_tokens=base.max_new_tokens)
            n_val = min(eval_examples or len(task["validation"]), len(task["validation"]))
            decoded = len(configs) * (len(task["test"]) + math.ceil(steps / base.eval_every) * n_val)  # pairs, in all
            eval_seconds = (time.perf_counter() - t_eval) / len(few) * decoded
            on_step = budget_hook(minutes, t_start, steps, len(configs), eval_seconds)
        cfg = dataclasses.replace(base, out_dir=str(out / name), lr=adapter_lr if name == "adapters" else lr)
        log(f"\n== {LABELS[name]}: {steps} steps, lr {cfg.lr:g} ==")
        history = train(model, tokenizer, task["train"], task["validation"], cfg, run_info={"config": name},
                        on_step=on_step, label=name)
        n_train, n_all = sum(p.numel() for p in model.parameters() if p.requires_grad), model.num_parameters()
        t_test = time.perf_counter()
        test = evaluate(model, tokenizer, task["test"], batch_size=cfg.eval_batch_size, num_beams=num_beams,
                        max_source_len=cfg.max_source_len, max_target_len=cfg.max_target_len,
                        max_new_tokens=cfg.max_new_tokens, progress=f"{name}: test" if progress else None)
        outputs[name] = test.pop("predictions")
        if save_models:  # a directory `generate` reads: the base model (adapters are never part of it), the tokenizer
            model.save_pretrained(out / name / "model")
            tokenizer.save_pretrained(out / name / "model")
            model_dirs[name] = out / name / "model"
            if name == "adapters":  # the adapter on its own: kilobytes, loadable in the adapters library
                model.save_adapter(out / name / "adapter", "task")
        rows.append({"config": name, "label": LABELS[name], **test, "trainable": n_train, "parameters": n_all,
                     "trainable_pct": 100 * n_train / n_all, "lr": cfg.lr, "steps": steps,
                     "train_s": history["train"][-1]["time"], "test_s": time.perf_counter() - t_test,
                     "wall_s": time.perf_counter() - t0, "model_dir": str(model_dirs.get(name, ""))})
        logs[LABELS[name]] = history["train"] + history["eval"]
        log(f"test: loss {test['loss']:.3f}, {scores_text(test)} ({fmt_time(rows[-1]['wall_s'])} for this "
            "configuration)")
        del model

    total_s = time.perf_counter() - t_start
    settings = (f"{steps} steps x global batch {batch_size}, AdamW (weight decay 0.01 on matrices), linear warm-up "
                f"{base.warmup} steps then linear decay, lr {lr:g} (adapters {adapter_lr:g}), gradient clipping 1.0, "
                f"sources <= {base.max_source_len} / targets <= {base.max_target_len} tokens, seed {seed}; test split "
                f"{len(task['test'])} pairs, {'greedy' if num_beams == 1 else f'beam search ({num_beams} beams)'}")
    table, test = results_table(rows), task["test"]
    samples = random.Random(seed).sample(range(len(test)), min(n_samples, len(test)))
    md = ["# Warm-starting BERT2BERT from MiniLM on the docstring-naming task\n", table, "", f"Training: {settings}.",
          "", f"Machine: {machine()}. Whole command: {total_s / 60:.1f} min.", ""]
    if sys.argv and sys.argv[0].endswith(("__main__.py", "experiment.py")):  # the command line that produced it
        prog = "python -m minis2s" if sys.argv[0].endswith("__main__.py") else "python -m minis2s.experiment"
        md += [f"Command: `{' '.join([prog, *map(shlex.quote, sys.argv[1:])])}`", ""]
    write_text(out / "results.md", "\n".join(md))
    write_json(out / "results.json", {"rows": rows, "settings": settings, "machine": machine(), "total_s": total_s})
    lines = ["# Sample generations on the test split\n"]
    for i in samples:
        lines.append(f"- **source:** {test[i].source}\n  - reference: `{test[i].target}`")
        lines += [f"  - {LABELS[c]}: `{outputs[c][i]}`" for c in configs]
    write_text(out / "samples.md", "\n".join(lines) + "\n")
    plot_curves(logs, out / "curves.png", title="docstring -> name: MiniLM-shaped bert2bert, same budget")

    print(f"\n{table}\n\n{settings}\nmachine: {machine()}; whole command {total_s / 60:.1f} min\n")
    for i in samples[:5]:
        print(f"source:    {test[i].source}\nreference: {test[i].target}")
        print("".join(f"  {name:>10}: {outputs[name][i]}\n" for name in configs))
    if minutes is not None and total_s > 60 * minutes:
        print(f"note: the command took {total_s / 60:.1f} min, over its {minutes:g}-minute budget: the machine got "
              "busier after the first steps were timed", file=sys.stderr)
    written = [out / n for n in ("results.md", "curves.png", "samples.md") if (out / n).is_file()]
    print("written: " + ", ".join(map(str, written)))  # no curves.png without matplotlib (a note said so)
    command = None
    if model_dirs:
        adapter = (f"; the adapter in {out / 'adapters' / 'adapter'}, which generate does not read (Python: "
                   "model.load_adapter(dir, set_active=True))") if "adapters" in model_dirs else ""
        print(f"model{'s' * (len(model_dirs) > 1)}: {', '.join(map(str, model_dirs.values()))} (config.json, "
              f"model.safetensors, tokenizer){adapter}")
        if (runnable := [c for c in ("bert2bert", "bertshare", "random") if c in model_dirs]) and samples:
            command = generate_command(model_dirs[runnable[0]], test[samples[0]].source)
            print(f"try it: {command}")
    return {"rows": rows, "steps": steps, "total_s": total_s, "outputs": outputs, "model_dirs": model_dirs,
            "command": command}


def results_table(rows) -> str:
    """The markdown table: one row per configuration, scores x 100."""
    return "\n".join(["| configuration | ROUGE-1 | ROUGE-2 | ROUGE-L | exact match | test loss | trainable params | "
                      "train + test time |", "|---|---:|---:|---:|---:|---:|---:|---:|"] + [
        f"| {r['label']} | {100 * r['rouge1']:.1f} | {100 * r['rouge2']:.1f} | {100 * r['rougeL']:.1f} | "
        f"{100 * r['exact_match']:.1f} | {r['loss']:.3f} | {r['trainable'] / 1e6:.2f}M ({r['trainable_pct']:.1f}%) | "
        f"{r['wall_s'] / 60:.1f} min |" for r in rows])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help=f"the main job: bert2bert only, {QUICK_STEPS} steps")
    p.add_argument("--configs", help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--steps", type=int, help=f"optimizer steps per configuration (default {STEPS}; {QUICK_STEPS} "
                   "with --quick)")
    p.add_argument("--minutes", type=float, help="optional cap on the whole command: stop after the first steps, with "
                   "the estimated time, if the run would not fit (the steps never change)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    p.add_argument("--out", help="run directory (default runs/experiment, runs/quick with --quick)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch (default: 32)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of full fine-tuning (default: 3e-4)")
    p.add_argument("--adapter-lr", type=float, default=1e-3, help="peak learning rate of adapters (default: 1e-3)")
    p.add_argument("--adapter", default="double_seq_bn", help="adapter preset: seq_bn, double_seq_bn (default), par_bn")
    p.add_argument("--num-beams", type=int, default=1, help="decoding of the test split (default 1: greedy)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--bert", default="minilm", help="the BERT checkpoint to start from (default 'minilm': embedded)")
    p.add_argument("--cache-dir", help="where the docstring task is cached")


def run_command(args) -> dict:
    configs = tuple(args.configs.split(",")) if args.configs else (("bert2bert",) if args.quick else CONFIGS)
    if unknown := [c for c in configs if c not in CONFIGS]:
        raise SystemExit(f"error: unknown configuration(s) {unknown}; choose from {CONFIGS}")
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else STEPS)
    if steps < 1:
        raise SystemExit(f"error: --steps must be >= 1, got {steps}")
    if args.minutes is not None and args.minutes <= 0:
        raise SystemExit(f"error: --minutes must be > 0, got {args.minutes:g}")
    _, threads = choose_threads(args.threads)
    return run(args.out or ("runs/quick" if args.quick else "runs/experiment"), configs=configs, steps=steps,
               minutes=args.minutes, batch_size=args.batch_size, lr=args.lr, adapter_lr=args.adapter_lr,
               adapter=args.adapter, num_beams=args.num_beams, seed=args.seed, bert=args.bert,
               cache_dir=args.cache_dir, threads=threads)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minis2s experiment", description=__doc__.split("\n")[0])
    add_arguments(parser)
    run_command(parser.parse_args(argv))


if __name__ == "__main__":
    main()
