"""The command line `python -m minis2s generate` (minis2s/generate_cli.py, wired in minis2s/__main__.py).

A tiny random model with the bert-base-uncased vocabulary (30522 ids, so MiniLM's tokenizer files fit it) is saved
with `save_pretrained` next to those tokenizer files. The command is run as a user runs it, in a subprocess, with
texts as arguments and with lines on stdin; its output must equal the Python API's decoded output. Error cases run
in-process (faster) and must exit with a one-line message naming the problem.

Run: python -m pytest tests/test_cli.py -q
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import minilm_dir, tiny_config
from minis2s.__main__ import main
from minis2s.generation import generate
from minis2s.model import EncoderDecoderModel
from minis2s.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["The tower is 324 metres tall.", "It was the first structure to reach a height of 300 metres.", "Hello!"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny model (bert-base-uncased ids: [CLS] 101 starts, [SEP] 102 ends) plus MiniLM's tokenizer files."""
    cfg = tiny_config(vocab=30522, max_pos=128)
    cfg.decoder_start_token_id, cfg.eos_token_id = 101, 102
    torch.manual_seed(0)
    model = EncoderDecoderModel(cfg)
    with torch.no_grad():  # sharper than N(0, 0.02) weights, so that different sources give different outputs
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    out = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(out)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm_dir() / name).is_file():
            shutil.copy(minilm_dir() / name, out / name)
    return out


def python_api(model_dir, texts, **settings) -> list[str]:
    """What the command should print, computed with the Python API."""
    model, tok = EncoderDecoderModel.from_pretrained(model_dir), load_tokenizer(model_dir)
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    ids = generate(model, enc["input_ids"], enc["attention_mask"], **settings)
    return tok.batch_decode(ids, skip_special_tokens=True)


def run_cli(*args, stdin=None) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "minis2s", "generate", *map(str, args)], input=stdin,
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr}"
    return done.stdout.splitlines()


def test_texts_as_arguments(model_dir):
    lines = run_cli(model_dir, *TEXTS[:2], "--max-new-tokens", 8)
    assert lines == python_api(model_dir, TEXTS[:2], max_new_tokens=8)
    assert len(set(lines)) == 2, "two different sources should give two different outputs"


def test_lines_from_stdin_with_beam_search(model_dir):
    """Stdin in batches of 2 lines, 2 hypotheses per source, best first."""
    options = ["--num-beams", 3, "--num-return-sequences", 2, "--no-repeat-ngram-size", 2, "--max-new-tokens", 6,
               "--early-stopping", "true"]
    lines = run_cli(model_dir, "-", *options, "--batch-size", 2, stdin="\n".join(TEXTS) + "\n")
    expected = python_api(model_dir, TEXTS, num_beams=3, num_return_sequences=2, no_repeat_ngram_size=2,
                          max_new_tokens=6, early_stopping=True)
    assert len(lines) == 2 * len(TEXTS) and lines == expected


@pytest.mark.parametrize("args, message", [
    (["{missing}", "text"], "has no config.json"),
    (["{model}", "text", "--num-beams", "2", "--num-return-sequences", "3"], "num_return_sequences 3 > num_beams 2"),
    (["{model}", "text", "--tokenizer", "{missing}"], "no such file or directory"),
])
def test_errors_name_the_problem(model_dir, tmp_path, capsys, args, message):
    args = [a.format(model=model_dir, missing=tmp_path / "missing") for a in args]
    with pytest.raises(SystemExit) as e:
        main(["generate", *args])
    assert message in str(e.value)


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "generate" in out and "train" in out
