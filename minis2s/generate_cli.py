"""`python -m minis2s generate`: try a model from the command line.

    python -m minis2s generate MODEL_DIR "some text" ["more text" ...] [options]
    cat sources.txt | python -m minis2s generate MODEL_DIR [options]       (one source per line; "-" also reads stdin)

MODEL_DIR is a minis2s checkpoint directory (config.json + model.safetensors, as written by `save_pretrained`);
the tokenizer is read from the same directory unless --tokenizer names another. Each source prints one line per
returned sequence (--num-return-sequences of them, best first), in input order; stdin is read and answered in
batches of --batch-size lines, so it works in a pipe. The options are `generation.generate`'s, with dashes.
"""

from __future__ import annotations

import argparse
import sys
from itertools import islice

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `generate` subcommand's options."""
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a minis2s checkpoint directory")
    p.add_argument("texts", metavar="TEXT", nargs="*", help='source texts; none or "-": one per line from stdin')
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory or file (default: MODEL_DIR)")
    length = p.add_argument_group("length (max_length and min_length count the start token)")
    length.add_argument("--max-new-tokens", type=int, metavar="N", help="default: 20, unless --max-length is given")
    length.add_argument("--max-length", type=int, metavar="N")
    length.add_argument("--min-new-tokens", type=int, metavar="N")
    length.add_argument("--min-length", type=int, metavar="N")
    beam = p.add_argument_group("beam search")
    beam.add_argument("--num-beams", type=int, metavar="N", default=1, help="1: greedy or sampling (default)")
    beam.add_argument("--length-penalty", type=float, metavar="X", default=1.0, help="> 0 favours longer outputs")
    beam.add_argument("--early-stopping", choices=("true", "false", "never"), default="false")
    beam.add_argument("--no-repeat-ngram-size", type=int, metavar="N", default=0, help="0: off")
    beam.add_argument("--num-return-sequences", type=int, metavar="N", default=1,
                      help="outputs per source (<= --num-beams)")
    sample = p.add_argument_group("sampling")
    sample.add_argument("--do-sample", action="store_true", help="sample instead of taking the most likely token")
    sample.add_argument("--temperature", type=float, metavar="X", default=1.0)
    sample.add_argument("--top-k", type=int, metavar="N", default=50, help="0: off (default 50, as in transformers)")
    sample.add_argument("--top-p", type=float, metavar="X", default=1.0, help="1.0: off")
    sample.add_argument("--seed", type=int, metavar="N", help="seed for the sampler (default: unseeded)")
    run = p.add_argument_group("running")
    run.add_argument("--max-source-length", type=int, metavar="N", help="truncate sources to this many tokens "
                     "(default: the encoder's max_position_embeddings)")
    run.add_argument("--batch-size", type=int, metavar="N", default=16, help="sources per generate call")
    run.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    run.add_argument("--attn", choices=("eager", "sdpa"), help="attention kernel (default: the config's)")
    run.add_argument("--no-cache", action="store_true", help="re-run the decoder on the whole prefix every step")
    run.add_argument("--keep-special-tokens", action="store_true", help="print [CLS], [SEP], [PAD] too")


def run_command(args: argparse.Namespace) -> None:
    """Load the model and tokenizer, then print the generations for every source."""
    from .generation import generate
    from .model import EncoderDecoderModel
    from .tokenizer import load_tokenizer

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model = EncoderDecoderModel.from_pretrained(args.model_dir, attn_implementation=args.attn,
                                                    map_location=device)
        tokenizer = load_tokenizer(args.tokenizer or args.model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    max_source = args.max_source_length or model.config.encoder.max_position_embeddings
    early_stopping = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    generator = torch.Generator(device).manual_seed(args.seed) if args.seed is not None else None
    settings = dict(max_length=args.max_length, max_new_tokens=args.max_new_tokens, min_length=args.min_length,
                    min_new_tokens=args.min_new_tokens, num_beams=args.num_beams, length_penalty=args.length_penalty,
                    early_stopping=early_stopping, no_repeat_ngram_size=args.no_repeat_ngram_size,
                    num_return_sequences=args.num_return_sequences, do_sample=args.do_sample,
                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=generator,
                    use_cache=not args.no_cache)

    from_stdin = not args.texts or args.texts == ["-"]
    lines = (line.rstrip("\r\n") for line in sys.stdin) if from_stdin else iter(args.texts)
    while batch := list(islice(lines, args.batch_size)):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_source, return_tensors="pt")
        try:
            ids = generate(model, enc["input_ids"].to(device), enc["attention_mask"].to(device), **settings)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        for text in tokenizer.batch_decode(ids.cpu(), skip_special_tokens=not args.keep_special_tokens):
            print(text, flush=from_stdin)
