"""The warm-starting experiment of Rothe, Narayan & Severyn 2020 (arXiv 1907.12461), at laptop scale.

Their headline: a Transformer encoder-decoder whose encoder and decoder start from a BERT checkpoint (BERT2BERT)
beats the same architecture trained from random weights (Rnd2Rnd), and sharing the encoder's and decoder's weights
(BERTShare) does about as well with fewer parameters. Here, on the shipped docstring-naming task (data.py), with
one architecture (a MiniLM-shaped bert2bert: 6 layers, hidden 384, 12 heads, 30,522 WordPieces) and one training
budget (the same steps, global batch, warm-up and decay for all), four configurations:

    random      Rnd2Rnd: MiniLM's architecture, BERT's random init
    bert2bert   encoder and decoder warm-started from all-MiniLM-L6-v2 (cross-attention and LM head new)
    bertshare   the same, encoder and decoder sharing every weight but cross-attention
    adapters    bert2bert with its pre-trained weights frozen; bottleneck adapters (Houlsby's double_seq_bn) and
                the blocks a warm start creates new (cross-attention, LM-head transform) trained:
                parameter-efficient fine-tuning against full fine-tuning

The task is the docstring-naming task restricted to names made of whole words of MiniLM's vocabulary
(`build_docstring_task(vocab=...)`): abbreviations such as `getaddrinfo` cannot be learnt from English in a few
minutes, and on the unrestricted task neither model gets anywhere in this budget (data.py's docstring has the
numbers; on it the warm-started model's validation loss is better, but greedy outputs barely depend on the source).

Each is scored on the held-out TEST split (greedy decoding by default): ROUGE-1/2/L F1 and exact match (metrics.py).
The number of steps is set from the measured step time so that the whole command fits `--minutes`.

    python -m minis2s experiment --minutes 18 --out runs/experiment     the table (results.md), curves.png, samples.md
    python -m minis2s experiment --quick                                the "main job": bert2bert only, ~3 minutes

References: Rothe et al. 2020 (REFERENCE.md §7: CNN/DailyMail ROUGE-2 Rnd2Rnd 14.00, BERT2BERT 17.84, BERTShare
18.10); Houlsby et al. 2019 (arXiv 1902.00751) for the adapters; Wang et al. 2020 (arXiv 2002.10957) for MiniLM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from .train import (BatchStream, Dist, TrainConfig, evaluate, forward_backward, make_autocast, make_optimizer,
                    plot_curves, random_init_like, resolve_checkpoint, seed_everything, split_batch, train)

CONFIGS = ("random", "bert2bert", "bertshare", "adapters")
LABELS = {"random": "Rnd2Rnd (random init)", "bert2bert": "BERT2BERT (warm-started)",
          "bertshare": "BERTShare (warm-started, shared)", "adapters": "BERT2BERT + adapters"}


def build(name: str, bert_dir: Path, seed: int, adapter: str = "double_seq_bn"):
    """The model of configuration `name`, ready to train (adapters: frozen base, trainable adapters + cross-attention)."""
    from .adapters import add_adapter, train_adapter
    from .convert import warm_start

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
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = torch.get_num_threads()
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{cpu}, {n} thread{'s' * (n > 1)}"
    return f"{where}, torch {torch.__version__.split('+')[0]}, Python {platform.python_version()}"


def time_steps(model, tokenizer, pairs, cfg: TrainConfig, n: int = 8) -> float:
    """Mean seconds per optimizer step of `model` over n batches (after one untimed warm-up step). The weights change.

    The mean, not the median: batches differ in length, and the run pays for the long ones too.
    """
    from .data import Seq2SeqCollator

    d = Dist()
    model.train()
    model.encoder.pooler.requires_grad_(False)
    opt = make_optimizer(model, cfg)
    stream = BatchStream(pairs, cfg.batch_size, cfg.seed + 1, cfg.sort_window)
    collate = Seq2SeqCollator(tokenizer, cfg.max_source_len, cfg.max_target_len)
    times = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        micro = [collate(part) for part in split_batch(stream.next(), 0, 1, cfg.grad_accum)]
        forward_backward(model, micro, d, make_autocast(d.device, "fp32"), model.config.decoder_start_token_id,
                         model.config.pad_token_id)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.mean(times)


def plan(budget_s: float, configs, bert_dir, tokenizer, task, cfg: TrainConfig, log) -> int:
    """Steps per configuration so that training + evaluation of every configuration fit `budget_s` seconds."""
    t0 = time.perf_counter()
    model = build("bert2bert", bert_dir, cfg.seed)
    full = time_steps(model, tokenizer, task["train"], cfg)
    sample = task["test"][:64]
    t_eval = time.perf_counter()
    evaluate(model, tokenizer, sample, batch_size=cfg.eval_batch_size, max_source_len=cfg.max_source_len,
             max_target_len=cfg.max_target_len, max_new_tokens=cfg.max_new_tokens)
    eval_per_pair = (time.perf_counter() - t_eval) / len(sample)  # an untrained model writes max-length outputs
    adapter = full
    if "adapters" in configs:
        adapter = time_steps(build("adapters", bert_dir, cfg.seed), tokenizer, task["train"], cfg, n=4)
    del model
    per_step = sum(adapter if c == "adapters" else full for c in configs)
    n_evals = 1 + (cfg.eval_every > 0) * 4  # the schedule's validation evaluations, see run()
    eval_s = len(configs) * eval_per_pair * (len(task["test"]) + n_evals * cfg.eval_examples)
    load_s = len(configs) * 4.0  # building a model, writing logs and plots
    spent = time.perf_counter() - t0
    # 20% margin: the training loop adds logging and evaluation bookkeeping, and these machines are noisy.
    steps = int(0.8 * (budget_s - spent - eval_s - load_s) / per_step)
    log(f"measured: {full:.2f} s/step full fine-tuning, {adapter:.2f} s/step adapters, {1000 * eval_per_pair:.0f} ms "
        f"per evaluated pair; planning took {spent:.0f} s -> {steps} steps per configuration")
    if steps < 20:
        raise SystemExit(f"error: {budget_s / 60:.1f} minutes leave only {steps} steps per configuration on this "
                         "machine; give more --minutes or fewer configurations")
    return steps


def run(out_dir, minutes: float = 18.0, configs=CONFIGS, steps: int | None = None, batch_size: int = 32,
        lr: float = 3e-4, adapter_lr: float = 1e-3, warmup_frac: float = 0.1, adapter: str = "double_seq_bn",
        num_beams: int = 1, seed: int = 0, bert: str = "minilm", n_samples: int = 10, cache_dir=None,
        eval_examples: int = 96, task: dict | None = None, progress: bool = True) -> dict:
    """Train and test every configuration; write results.md/json, curves.png and samples.md into `out_dir`.

    `eval_examples`: validation pairs scored during training; `task`: {"train", "validation", "test"} pairs to use
    instead of the docstring task (smoke tests).
    """
    from .data import build_docstring_task
    from .tokenizer import load_tokenizer

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        if progress:
            print(msg, file=sys.stderr, flush=True)

    bert_dir = resolve_checkpoint(bert)
    tokenizer = load_tokenizer(bert_dir)
    if task is None:  # names made of whole vocabulary words, see the module docstring
        task = build_docstring_task(cache_dir, vocab=tokenizer.backend_tokenizer.get_vocab())
    log(f"docstring task (names of whole vocabulary words): {len(task['train'])} train / {len(task['validation'])} validation / {len(task['test'])} "
        f"test pairs; machine: {machine()}")
    base = TrainConfig(batch_size=batch_size, lr=lr, seed=seed, max_source_len=64, max_target_len=16,
                       eval_examples=eval_examples, max_new_tokens=16, num_beams=1, progress=progress, log_every=25,
                       overwrite=True)
    planned = steps is None
    if planned:
        steps = plan(minutes * 60 - (time.perf_counter() - t_start), configs, bert_dir, tokenizer, task, base, log)
    base.steps, base.warmup, base.eval_every = steps, max(1, round(warmup_frac * steps)), max(1, steps // 4)

    rows, logs, outputs = [], {}, {}
    for name in configs:
        t0 = time.perf_counter()
        seed_everything(seed)
        model = build(name, bert_dir, seed, adapter)
        cfg = TrainConfig(**{**base.to_dict(), "out_dir": str(out / name),
                             "lr": adapter_lr if name == "adapters" else lr,
                             "save_checkpoints": len(configs) == 1})
        log(f"\n== {LABELS[name]}: {steps} steps, lr {cfg.lr:g} ==")
        history = train(model, tokenizer, task["train"], task["validation"], cfg, run_info={"config": name})
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = model.num_parameters()
        t_test = time.perf_counter()
        test = evaluate(model, tokenizer, task["test"], batch_size=cfg.eval_batch_size,
                        max_source_len=cfg.max_source_len, max_target_len=cfg.max_target_len,
                        max_new_tokens=cfg.max_new_tokens, num_beams=num_beams)
        outputs[name] = test.pop("predictions")
        rows.append({"config": name, "label": LABELS[name], **test, "trainable": n_train, "parameters": n_all,
                     "trainable_pct": 100 * n_train / n_all, "lr": cfg.lr, "steps": steps,
                     "train_s": history["train"][-1]["time"], "test_s": time.perf_counter() - t_test,
                     "wall_s": time.perf_counter() - t0})
        logs[LABELS[name]] = history["train"] + history["eval"]
        log(f"test: loss {test['loss']:.3f}, ROUGE-1/2/L {100 * test['rouge1']:.1f}/{100 * test['rouge2']:.1f}/"
            f"{100 * test['rougeL']:.1f}, exact match {100 * test['exact_match']:.1f}% ({rows[-1]['wall_s']:.0f} s)")
        del model

    total_s = time.perf_counter() - t_start
    settings = (f"{steps} steps x global batch {batch_size}, AdamW (weight decay 0.01 on matrices), linear warm-up "
                f"{base.warmup} steps then linear decay, lr {lr:g} (adapters {adapter_lr:g}), gradient clipping 1.0, "
                f"sources <= {base.max_source_len} / targets <= {base.max_target_len} tokens, seed {seed}; test split "
                f"{len(task['test'])} pairs, {'greedy' if num_beams == 1 else f'beam search ({num_beams} beams)'}")
    table = results_table(rows)
    samples = random.Random(seed).sample(range(len(task["test"])), min(n_samples, len(task["test"])))
    write_outputs(out, rows, table, settings, total_s, task["test"], samples, outputs, logs, configs)
    print(f"\n{table}\n\n{settings}\nmachine: {machine()}; whole command {total_s / 60:.1f} min\n")
    for i in samples[:5]:
        print(f"source:    {task['test'][i].source}\nreference: {task['test'][i].target}")
        for name in configs:
            print(f"  {name:>10}: {outputs[name][i]}")
        print()
    print(f"written: {out / 'results.md'}, {out / 'curves.png'}, {out / 'samples.md'}")
    if planned and total_s > 60 * minutes:
        print(f"note: the command took {total_s / 60:.1f} min, over its {minutes:g}-minute budget: the machine got "
              "busier after the step time was measured (on a shared machine, OMP_NUM_THREADS=1 often runs faster)",
              file=sys.stderr)
    return {"rows": rows, "steps": steps, "total_s": total_s, "outputs": outputs}


def results_table(rows) -> str:
    """The markdown table: one row per configuration, scores x 100."""
    head = ("| configuration | ROUGE-1 | ROUGE-2 | ROUGE-L | exact match | test loss | trainable params | "
            "train + test time |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['label']} | {100 * r['rouge1']:.1f} | {100 * r['rouge2']:.1f} | {100 * r['rougeL']:.1f} | "
                     f"{100 * r['exact_match']:.1f} | {r['loss']:.3f} | {r['trainable'] / 1e6:.2f}M "
                     f"({r['trainable_pct']:.1f}%) | {r['wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def write_outputs(out: Path, rows, table, settings, total_s, test, samples, outputs, logs, configs) -> None:
    from .config import write_json_atomic

    cmd = None  # the command line that produced the table, when it was one
    if sys.argv and sys.argv[0].endswith(("__main__.py", "experiment.py")):
        prog = "python -m minis2s" if sys.argv[0].endswith("__main__.py") else "python -m minis2s.experiment"
        cmd = " ".join([prog, *map(shlex.quote, sys.argv[1:])])
    md = [f"# Warm-starting BERT2BERT from MiniLM on the docstring-naming task\n", table, "",
          f"Training: {settings}.", "", f"Machine: {machine()}. Whole command: {total_s / 60:.1f} min.", ""]
    if cmd:
        md += [f"Command: `{cmd}`", ""]
    (out / "results.md").write_text("\n".join(md), encoding="utf-8")
    write_json_atomic(out / "results.json", {"rows": rows, "settings": settings, "machine": machine(),
                                             "total_s": total_s})
    lines = ["# Sample generations on the test split\n"]
    for i in samples:
        lines.append(f"- **source:** {test[i].source}\n  - reference: `{test[i].target}`")
        lines += [f"  - {LABELS[c]}: `{outputs[c][i]}`" for c in configs]
    (out / "samples.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_curves(logs, out / "curves.png", title="docstring -> name: MiniLM-shaped bert2bert, same budget")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=None,
                   help="budget of the whole command (default 18; 3 with --quick); sets the number of steps")
    p.add_argument("--quick", action="store_true", help="the main job: warm-started bert2bert only")
    p.add_argument("--configs", default=None, help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--steps", type=int, default=None, help="fix the steps instead of measuring the budget")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of full fine-tuning")
    p.add_argument("--adapter-lr", type=float, default=1e-3, help="peak learning rate of adapter training")
    p.add_argument("--adapter", default="double_seq_bn", help="adapter preset (seq_bn, double_seq_bn, par_bn)")
    p.add_argument("--num-beams", type=int, default=1, help="decoding of the test split (1: greedy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bert", default="minilm", help="the BERT checkpoint to warm-start from ('minilm': embedded)")
    p.add_argument("--out", default=None, help="run directory (default runs/experiment, runs/quick with --quick)")
    p.add_argument("--cache-dir", default=None, help="where the docstring task is cached")


def run_command(args) -> dict:
    configs = tuple(args.configs.split(",")) if args.configs else (("bert2bert",) if args.quick else CONFIGS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"error: unknown configuration(s) {unknown}; choose from {CONFIGS}")
    minutes = args.minutes if args.minutes is not None else (3.0 if args.quick else 18.0)
    out = args.out or ("runs/quick" if args.quick else "runs/experiment")
    return run(out, minutes=minutes, configs=configs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
               adapter_lr=args.adapter_lr, adapter=args.adapter, num_beams=args.num_beams, seed=args.seed,
               bert=args.bert, cache_dir=args.cache_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minis2s experiment", description=__doc__.split("\n")[0])
    add_arguments(parser)
    run_command(parser.parse_args(argv))


if __name__ == "__main__":
    main()
