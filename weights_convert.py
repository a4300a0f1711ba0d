"""Convert checkpoints to and from minis2s. Needs only torch and safetensors (transformers is never imported).

    python weights_convert.py warm-start ./bert-base-uncased ./bert2bert            # BERT2BERT, as in Rothe et al. 2020
    python weights_convert.py warm-start ./bert-base-uncased ./bertshare --share    # BERTShare
    python weights_convert.py from-hf ./bert2bert_cnn_daily_mail ./b2b-cnn          # transformers EncoderDecoderModel -> minis2s
    python weights_convert.py to-hf ./b2b-cnn ./b2b-cnn-hf                           # minis2s -> transformers

Every command prints which source tensors were used, which were ignored (and why) and which were newly initialised.
OUT_DIR is written to a temporary directory and renamed into place, so an interrupted run leaves no half checkpoint;
a non-empty OUT_DIR is refused unless --force. Exit status: 0 done, 1 failed (one-line reason on stderr), 2 usage.
The library behind it is minis2s/convert.py.
"""

from __future__ import annotations

import argparse
import sys

from minis2s import convert


def warm_start(args) -> str:
    model, report = convert.warm_start(args.encoder_dir, args.decoder, share=args.share, seed=args.seed,
                                       output_loading_info=True)
    copied = convert.save_minis2s(model, args.out_dir, tokenizer_dir=args.encoder_dir, force=args.force)
    report.notes.append(f"copied {', '.join(copied) or 'no tokenizer files'} from {args.encoder_dir}")
    return (f"{report}\nwrote {args.out_dir}: {'BERTShare' if args.share else 'BERT2BERT'}, "
            f"{model.num_parameters():,} parameters")


def from_hf(args) -> str:
    model, report = convert.from_hf(args.src_dir, output_loading_info=True)
    copied = convert.save_minis2s(model, args.out_dir, tokenizer_dir=args.src_dir, force=args.force)
    report.notes.append(f"copied {', '.join(copied) or 'no tokenizer files'} from {args.src_dir}")
    return f"{report}\nwrote {args.out_dir}: minis2s, {model.num_parameters():,} parameters"


def to_hf(args) -> str:
    model = convert.load_minis2s(args.src_dir)
    report = convert.to_hf(model, args.out_dir, tokenizer_dir=args.src_dir, force=args.force)
    return f"{report}\nwrote {args.out_dir}: transformers EncoderDecoderModel, {model.num_parameters():,} parameters"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weights_convert.py", description=__doc__.split("\n")[0],
                                epilog="Run `weights_convert.py COMMAND --help` for a command's options.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    w = sub.add_parser("warm-start", help="BERT checkpoint(s) -> a minis2s BERT2BERT (new cross-attention)",
                       description="Build a BERT2BERT as transformers' from_encoder_decoder_pretrained does: encoder "
                                   "and decoder from BERT checkpoints (config.json + model.safetensors, "
                                   "pytorch_model.bin or shards), new cross-attention, LM head from the MLM head when "
                                   "present; special ids [CLS]/[PAD]/[SEP] from the vocabulary; tokenizer files copied.")
    w.add_argument("encoder_dir", metavar="ENCODER_DIR", help="BERT checkpoint directory for the encoder")
    w.add_argument("out_dir", metavar="OUT_DIR", help="minis2s checkpoint directory to write")
    w.add_argument("--decoder", metavar="DECODER_DIR", help="another BERT checkpoint for the decoder (default: ENCODER_DIR)")
    w.add_argument("--share", action="store_true", help="tie encoder and decoder weights (BERTShare)")
    w.add_argument("--seed", type=int, help="seed for the newly initialised weights (reproducible output)")
    w.set_defaults(run=warm_start)

    f = sub.add_parser("from-hf", help="transformers EncoderDecoderModel directory -> minis2s",
                       description="Convert a transformers EncoderDecoderModel directory (BertModel encoder, "
                                   "BertLMHeadModel decoder: keys encoder.*, decoder.bert.*, decoder.cls.*) to "
                                   "minis2s, every weight kept; tokenizer files copied.")
    f.add_argument("src_dir", metavar="SRC_DIR", help="transformers EncoderDecoderModel directory")
    f.add_argument("out_dir", metavar="OUT_DIR", help="minis2s checkpoint directory to write")
    f.set_defaults(run=from_hf)

    t = sub.add_parser("to-hf", help="minis2s -> transformers EncoderDecoderModel directory",
                       description="Write a minis2s checkpoint as transformers' EncoderDecoderModel.save_pretrained "
                                   "would (config.json, generation_config.json, model.safetensors, tokenizer files).")
    t.add_argument("src_dir", metavar="SRC_DIR", help="minis2s checkpoint directory")
    t.add_argument("out_dir", metavar="OUT_DIR", help="transformers directory to write")
    t.set_defaults(run=to_hf)
    for sp in (w, f, t):
        sp.add_argument("--force", action="store_true", help="overwrite a non-empty OUT_DIR")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)  # exits with status 2 on a usage error
    try:
        print(args.run(args))
    except Exception as e:  # one line, no traceback: every error message here names its file, key or shape
        print(f"weights_convert.py {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
