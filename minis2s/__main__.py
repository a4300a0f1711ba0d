"""The command line: `python -m minis2s COMMAND ...`.

    python -m minis2s generate MODEL_DIR "some text" [options]     generate_cli.py
    python -m minis2s train --warm-start minilm --out runs/NAME     train.py
    python -m minis2s experiment [--quick] [--steps N]             experiment.py

Each command's module provides `add_arguments(parser)` and `run_command(args)`; `COMMAND --help` lists its options.
Exit status: 0 done, 1 an error (one line naming the file, the option or the value), 2 a usage error.
"""

import argparse

from . import experiment, generate_cli, train

COMMANDS = {  # name -> (module, one-line help)
    "generate": (generate_cli, "generate text with a trained model (greedy, beam search or sampling)"),
    "train": (train, "fine-tune a BERT2BERT, fully or with adapters"),
    "experiment": (experiment, "warm-started vs random BERT2BERT, BERTShare, adapters: the table (or --quick)"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minis2s", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_line) in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=help_line, description=module.__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command][0].run_command(args)
    except (OSError, ValueError) as e:  # a missing or malformed file, a bad value: one line, no traceback
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
