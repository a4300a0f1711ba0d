"""The command line `python -m minis2s generate` (minis2s/generate_cli.py, wired in minis2s/__main__.py), and the
options that train and generate derive from their settings dataclasses (train.add_options).

A tiny random model with the bert-base-uncased vocabulary (30522 ids, so MiniLM's tokenizer files fit it) is saved
with `save_pretrained` next to those tokenizer files. The command is run as a user runs it, in a subprocess, with
texts as arguments and with lines on stdin; its output must equal the Python API's decoded output. Error cases run
in-process (faster) and must exit with a one-line message naming the problem. Every TrainConfig field and every
generate setting is an option whose default is the field's (generate's own default, for the latter).

Run: python -m pytest tests/test_cli.py -q
"""

import argparse
import dataclasses
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import minilm_dir, tiny_config
from minis2s import EncoderDecoderModel, generate, load_tokenizer
from minis2s.__main__ import main
from minis2s.generate_cli import Settings
from minis2s.train import TrainConfig, add_arguments, from_options

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


def parse_train(*args) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_options(TrainConfig, parser.parse_args(["--warm-start", "minilm", "--out", "runs/x", *args]))


def test_train_options_are_the_config_fields_with_their_defaults():
    assert parse_train() == TrainConfig(out_dir="runs/x")
    cfg = parse_train("--steps", "7", "--lr", "1e-3", "--betas", "0.8", "0.99", "--amp", "fp32", "--device", "cpu",
                      "--force", "--resume", "--no-plot", "--no-eval-generate", "--max-grad-norm", "0")
    assert cfg == TrainConfig(out_dir="runs/x", steps=7, lr=1e-3, betas=(0.8, 0.99), amp="fp32", device="cpu",
                              overwrite=True, resume=True, plot=False, eval_generate=False, max_grad_norm=0.0)
    with pytest.raises(SystemExit):  # argparse's usage error (exit status 2): not a choice
        parse_train("--amp", "fp16")


def test_generate_options_default_to_what_generate_does():
    defaults = inspect.signature(generate).parameters
    for f in dataclasses.fields(Settings):
        expected = defaults[f.name].default
        assert f.default == (str(expected).lower() if f.name == "early_stopping" else expected), f.name


def test_a_bad_file_is_one_line_and_exit_status_1(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "minis2s", "train", "--model-dir", str(tmp_path / "missing"),
                           "--out", str(tmp_path / "run"), "--threads", "1"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "missing" in done.stderr
