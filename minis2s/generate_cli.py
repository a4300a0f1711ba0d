"""`python -m minis2s generate`: try a model from the command line.

    python -m minis2s generate MODEL_DIR "some text" ["more text" ...] [options]
    cat sources.txt | python -m minis2s generate MODEL_DIR [options]       (a source a line, --batch-size at a time)
"""

import argparse
import dataclasses
import sys
from itertools import islice
from typing import Literal

import torch

from . import EncoderDecoderModel, generate, load_tokenizer
from .train import add_options, from_options, option


@dataclasses.dataclass
class Settings:
    """`generate`'s settings, one option each; max_length and min_length count the start token."""

    max_new_tokens: int | None = option(None, "at most this many new tokens (default: 20 unless --max-length)")
    max_length: int | None = option(None, "at most this many tokens")
    min_new_tokens: int | None = option(None, "no [SEP] before this many new tokens")
    min_length: int | None = option(None, "no [SEP] before this many tokens")
    num_beams: int = option(1, "beam search with this many beams; 1: greedy or sampling")
    length_penalty: float = option(1.0, "beam search: > 0 favours longer outputs")
    early_stopping: Literal["true", "false", "never"] = option("false", "beam search: when to stop")
    no_repeat_ngram_size: int = option(0, "no n-gram of this size twice in an output; 0: off")
    num_return_sequences: int = option(1, "outputs per source (<= --num-beams)")
    do_sample: bool = option(False, "sample instead of taking the most likely token")
    temperature: float = option(1.0, "sampling: divide the logits by this")
    top_k: int = option(50, "sampling: keep the k most likely tokens; 0: off (50 as in transformers)")
    top_p: float = option(1.0, "sampling: keep the most likely tokens that make up this probability; 1.0: off")
    use_cache: bool = option(True, "re-run the decoder on the whole prefix every step", flags=("--no-cache",))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `generate` subcommand's options: what to run and how, then `Settings`."""
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a minis2s checkpoint directory")
    p.add_argument("texts", metavar="TEXT", nargs="*", help='source texts; none or "-": one per line from stdin')
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory or file (default: MODEL_DIR)")
    p.add_argument("--seed", type=int, metavar="N", help="seed for the sampler (default: unseeded)")
    p.add_argument("--max-source-length", type=int, metavar="N", help="truncate sources (default: the encoder's limit)")
    p.add_argument("--batch-size", type=int, metavar="N", default=16, help="sources per generate call (default: 16)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--attn", choices=("eager", "sdpa"), help="attention kernel (default: the config's)")
    p.add_argument("--keep-special-tokens", action="store_true", help="print [CLS], [SEP], [PAD] too")
    add_options(p, Settings)


def run_command(args: argparse.Namespace) -> None:
    """Print one line per returned sequence, best first, for every source."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = EncoderDecoderModel.from_pretrained(args.model_dir, attn_implementation=args.attn, map_location=device)
    tokenizer = load_tokenizer(args.tokenizer or args.model_dir)
    settings = {**dataclasses.asdict(from_options(Settings, args)),
                "early_stopping": {"true": True, "false": False, "never": "never"}[args.early_stopping],
                "generator": None if args.seed is None else torch.Generator(device).manual_seed(args.seed)}
    max_length = args.max_source_length or model.config.encoder.max_position_embeddings
    lines = (line.rstrip("\r\n") for line in sys.stdin) if args.texts in ([], ["-"]) else iter(args.texts)
    while batch := list(islice(lines, args.batch_size)):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        ids = generate(model, enc["input_ids"].to(device), enc["attention_mask"].to(device), **settings)
        texts = tokenizer.batch_decode(ids.cpu(), skip_special_tokens=not args.keep_special_tokens)
        print(*texts, sep="\n", flush=True)  # flushed: a reader at the other end of a pipe gets each batch at once
