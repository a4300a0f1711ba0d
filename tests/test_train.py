"""The training loop (minis2s/train.py) on tiny random models and a tiny vocabulary, offline.

Covers: a few steps lower the loss; a resumed run repeats the uninterrupted run's losses exactly (full fine-tuning
and adapters); gradient accumulation over uneven micro-batches equals one big batch; a 2-process DDP run (gloo,
launched by torchrun) follows the single-process run on the same global batch; weight-decay groups; the
learning-rate schedule; the JSONL log, the plot and the command line. The experiment (minis2s/experiment.py): every
configuration end to end with the models it writes and the generate command it prints (run as printed); its fixed
work (--quick 234 steps, else 388); --threads and the default thread choice (float-rounding differences only); a
--minutes budget too small for the work (one line, exit status 1); progress: tqdm's bars on a terminal, plain lines
with an ETA without tqdm or in a log file.

Run: python -m pytest -q tests/test_train.py
"""

import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_close, require, tiny_config
from minis2s import BnConfig, EncoderDecoderModel, add_adapter, experiment, load_tokenizer, train_adapter
from minis2s import train as train_module
from minis2s.__main__ import main as cli
from minis2s.checkpoint import stack_to_bert_name
from minis2s.data import Pair, Seq2SeqCollator
from minis2s.files import read_safetensors, write_json, write_safetensors
from minis2s.train import (Dist, TrainConfig, evaluate, forward_backward, global_batches, lr_multiplier, main,
                           param_groups, split_batch, token_loss_sum, train)

WORDS = [f"w{i}" for i in range(94)]  # with [PAD] [UNK] [CLS] [SEP] [MASK]: 99 ids, tiny_config's vocabulary


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir / "vocab.txt")


def make_pairs(n, seed):
    """Source: 2-8 random words; target: the first 1-4 of them reversed. Target lengths vary on purpose."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = [rng.choice(WORDS[:40]) for _ in range(rng.randint(2, 8))]
        out.append(Pair(" ".join(src), " ".join(reversed(src[:rng.randint(1, 4)]))))
    return out


TRAIN, VAL = make_pairs(96, 0), make_pairs(16, 1)


def make_model(seed=0, dropout=True):
    config = tiny_config()
    if not dropout:  # runs that cut the batch differently draw different dropout masks: compare without
        for c in (config.encoder, config.decoder):
            c.hidden_dropout_prob = c.attention_probs_dropout_prob = 0.0
    torch.manual_seed(seed)
    return EncoderDecoderModel(config)


def fast(**kw):
    """A TrainConfig for tiny runs: no progress output, few evaluation examples."""
    base = dict(steps=4, batch_size=8, lr=3e-3, warmup=1, eval_every=0, eval_examples=8, max_new_tokens=4,
                progress=False, plot=False)
    return TrainConfig(**{**base, **kw})


def params_of(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_a_few_steps_lower_the_loss(tok):
    model = make_model()
    before = evaluate(model, tok, VAL, generate_text=False)["loss"]
    history = train(model, tok, TRAIN, VAL, fast(steps=25, batch_size=16, lr=5e-3, warmup=2))
    after = history["eval"][-1]["loss"]
    assert after < before - 0.5, f"validation loss {before:.3f} -> {after:.3f}"
    assert [r["step"] for r in history["train"]] == list(range(1, 26))
    assert {"rouge1", "rouge2", "rougeL", "exact_match"} <= set(history["eval"][-1])


@pytest.mark.parametrize("to_disk", [False, True], ids=["in-memory", "out_dir"])
def test_evaluation_without_generation_scores_the_loss_only(tok, tmp_path, to_disk):
    cfg = fast(steps=2, eval_every=1, eval_generate=False, out_dir=str(tmp_path / "run") if to_disk else None)
    history = train(make_model(), tok, TRAIN, VAL, cfg)
    assert [sorted(r) for r in history["eval"]] == [["kind", "loss", "step", "time"]] * 2
    assert history["predictions"] is None
    if to_disk:  # no generations: no predictions file, and the log has the loss-only evaluations
        assert not (tmp_path / "run" / "predictions.jsonl").exists()
        assert (tmp_path / "run" / "log.jsonl").read_text().count('"kind": "eval"') == 2


def adapter_model(seed):
    model = make_model(seed)
    add_adapter(model, "task", "double_seq_bn")
    train_adapter(model, "task", train_cross_attention=True)
    return model


@pytest.mark.parametrize("kind", ["full", "adapter"])
def test_resume_repeats_the_uninterrupted_losses(tok, tmp_path, kind):
    build = make_model if kind == "full" else adapter_model
    # Uninterrupted: 6 steps, checkpoints after steps 3 and 6, dropout on (so the RNG state must be restored).
    a = tmp_path / "a"
    model_a = build(0)
    hist_a = train(model_a, tok, TRAIN, VAL, fast(out_dir=str(a), steps=6, save_every=3, keep_checkpoints=2,
                                                   eval_every=3))
    # "Interrupted" after step 3: a run directory holding only the step-3 checkpoint and the log as it stood.
    b = tmp_path / "b"
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(a / "checkpoints" / "step-000003", b / "checkpoints" / "step-000003")
    shutil.copy(a / "train_config.json", b)
    shutil.copy(a / "log.jsonl", b)  # runs to step 6: the resumed run must cut it back to step 3
    model_b = build(123)  # other weights: the checkpoint's must replace them
    hist_b = train(model_b, tok, TRAIN, VAL, fast(out_dir=str(b), steps=6, save_every=3, eval_every=3, resume=True))

    loss_a = [r["loss"] for r in hist_a["train"]]
    loss_b = [r["loss"] for r in hist_b["train"]]
    assert loss_b == loss_a, f"uninterrupted {loss_a}\nresumed       {loss_b}"
    assert [r["loss"] for r in hist_b["eval"]] == [r["loss"] for r in hist_a["eval"]]
    for name, p in params_of(model_a).items():
        assert torch.equal(p, params_of(model_b)[name]), f"{name} differs after resuming"
    steps_logged = [r["step"] for r in map(json.loads, (b / "log.jsonl").read_text().splitlines())]
    assert steps_logged == [1, 2, 3, 3, 4, 5, 6, 6], steps_logged  # train 1-3, eval 3, train 4-6, eval 6
    if kind == "adapter":
        assert (b / "checkpoints" / "step-000006" / "adapters" / "task" / "adapter_config.json").is_file()


def test_an_existing_run_is_neither_overwritten_nor_resumed_silently(tok, tmp_path):
    train(make_model(), tok, TRAIN, VAL, fast(out_dir=str(tmp_path), steps=1))
    with pytest.raises(FileExistsError, match="--resume"):
        train(make_model(), tok, TRAIN, VAL, fast(out_dir=str(tmp_path), steps=1))


def collated_batches(tok, pairs, cut):
    collate = Seq2SeqCollator(tok, 16, 8)
    return [collate(pairs[a:b]) for a, b in zip(cut, cut[1:])]


def grads_after(model, batches):
    model.zero_grad(set_to_none=True)
    loss, n, _ = forward_backward(model, batches, Dist(), lambda: torch.autocast("cpu", enabled=False), 2, 0)
    return loss, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_accumulation_over_uneven_micro_batches_equals_one_big_batch(tok):
    # Targets of 4 tokens in the first micro-batch, of 1-2 in the others: per-micro-batch means would weight
    # the short ones more.
    pairs = [Pair("w1 w2 w3", "w4 w5 w6")] * 2 + [Pair("w7 w8", "w9")] * 3 + [Pair("w10 w11 w12", "w13 w14")] * 3
    model = make_model(dropout=False)
    loss_big, big = grads_after(model, collated_batches(tok, pairs, [0, 8]))
    loss_acc, acc = grads_after(model, collated_batches(tok, pairs, [0, 2, 5, 8]))
    # The same sums grouped otherwise: equal to float32 rounding, i.e. a few ulps of the largest value summed (for
    # gradients, of the largest gradient in the model: a near-zero gradient is a sum of large, cancelling terms).
    # 64 ulps is far below the 1e-4 that the naive average gets wrong below.
    eps = torch.finfo(torch.float32).eps
    assert abs(loss_big - loss_acc) <= 64 * eps * abs(loss_big), (loss_big, loss_acc)
    assert big.keys() == acc.keys()
    scale = max(g.abs().max().item() for g in big.values())
    for k in big:
        assert_close(acc[k], big[k], 64 * eps * scale, f"grad of {k}")

    # The test can fail: the naive average of per-micro-batch mean losses gives another gradient.
    model.zero_grad(set_to_none=True)
    parts = collated_batches(tok, pairs, [0, 2, 5, 8])
    for b in parts:
        n = (b["labels"] != -100).sum()
        (token_loss_sum(model, b, 2, 0) / n / len(parts)).backward()
    naive = model.lm_head.bias.grad
    assert (naive - big["lm_head.bias"]).abs().max() > 1e-4


def test_grad_accum_runs_follow_the_same_trajectory(tok):
    runs = []
    for k in (1, 3):
        model = make_model(dropout=False)
        history = train(model, tok, TRAIN, VAL, fast(steps=3, batch_size=9, grad_accum=k))
        runs.append((history, params_of(model)))
    (h1, p1), (h3, p3) = runs
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(h1["train"], h3["train"])) < 1e-6
    for k in p1:
        assert_close(p3[k], p1[k], 1e-6, f"{k} after 3 steps, grad_accum 3 vs 1")


def test_split_batch_and_global_batches():
    assert split_batch(list(range(10)), 0, 2, 2) == [[0, 1, 2], [3, 4, 5]]
    assert split_batch(list(range(10)), 1, 2, 2) == [[6, 7], [8, 9]]
    with pytest.raises(ValueError, match="at least 4"):
        split_batch([1, 2, 3], 0, 2, 2)
    # The batch of a step depends on the step alone (what a resumed run relies on), across epochs too: 96 pairs make
    # 6 batches of 16 an epoch, each epoch every pair once, in another order.
    batches = global_batches(TRAIN, 16, seed=3, sort_window=2)
    steps = [batches(step) for step in range(1, 15)]
    again = global_batches(TRAIN, 16, seed=3, sort_window=2)
    assert [again(step) for step in (14, 6, 7)] == [steps[13], steps[5], steps[6]]
    for epoch in (steps[:6], steps[6:12]):
        assert sorted(p for batch in epoch for p in batch) == sorted(TRAIN)
    assert steps[:6] != steps[6:12]


def test_weight_decay_groups_hold_matrices_only():
    model = make_model()
    add_adapter(model, "a", BnConfig(mh_adapter=True, output_adapter=True, reduction_factor=4, non_linearity="relu",
                                     ln_before=True, ln_after=True, scaling="learned"))
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert not decayed & kept and len(decayed | kept) == len(names)
    for n in kept:  # biases, every LayerNorm (the adapters' too) and the learned scaling
        assert n.endswith(".bias") or "ln" in n.split(".")[-2] or n.endswith(".scaling"), n
    assert "lm_head.bias" in kept and "encoder.embeddings.ln.weight" in kept
    assert any(".adapters.attn.a.ln_before.weight" in n for n in kept)
    assert any(".adapters.ffn.a.ln_after.weight" in n for n in kept)
    assert all(model.get_parameter(n).dim() == 2 for n in decayed)
    assert "encoder.embeddings.word_emb.weight" in decayed and "decoder.layers.0.cross_attn.query.weight" in decayed

    train_adapter(model, "a")  # frozen parameters are in no group
    decay, no_decay = param_groups(model, 0.01)
    assert all(".adapters." in names[id(p)] for p in decay["params"] + no_decay["params"])


def test_schedule_values_at_known_steps(tok):
    assert [lr_multiplier(s, 2, 5) for s in range(1, 6)] == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3])
    assert [lr_multiplier(s, 0, 4) for s in range(1, 5)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_multiplier(10, 10, 10) == 1.0  # all warm-up
    history = train(make_model(), tok, TRAIN, VAL, fast(steps=5, warmup=2, lr=1e-3))
    assert [r["lr"] for r in history["train"]] == pytest.approx([5e-4, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])


def write_tiny_run_inputs(root: Path, tok, dropout: bool):
    """A minis2s model directory (weights, config, tokenizer) and JSONL data files for the command line."""
    model_dir = root / "model"
    make_model(dropout=dropout).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    for name, pairs in (("train", TRAIN), ("val", VAL)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(p._asdict()) + "\n" for p in pairs))
    return ["--model-dir", str(model_dir), "--train", str(root / "train.jsonl"), "--val", str(root / "val.jsonl")]


def test_command_line_end_to_end_writes_log_plot_and_checkpoint(tok, tmp_path, capsys):
    require("matplotlib")
    inputs = write_tiny_run_inputs(tmp_path, tok, dropout=True)
    run = tmp_path / "runs" / "tiny"
    main(inputs + ["--steps", "3", "--batch-size", "8", "--lr", "1e-3", "--warmup", "1", "--eval-every", "2",
                   "--eval-examples", "4", "--out", str(run)])
    out = capsys.readouterr().out
    assert "sample generations" in out and "ROUGE-1/2/L" in out
    ckpt_model = run / "checkpoints" / "step-000003" / "model"
    assert out.strip().splitlines()[-1].startswith(f"try it: python -m minis2s generate {ckpt_model} ")

    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("eval", 2), ("train", 3),
                                                           ("eval", 3)]
    assert all(r["tokens"] > 0 and r["loss"] > 0 and "grad_norm" in r for r in records if r["kind"] == "train")
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 4
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["run"]["model_dir"].endswith("model")

    # The checkpoint is a model directory that loads back as it is, tokenizer included.
    ckpt = run / "checkpoints" / "step-000003"
    assert EncoderDecoderModel.from_pretrained(ckpt / "model").num_parameters() > 0
    assert load_tokenizer(ckpt / "model").vocab_size == 99
    # Resuming a finished run with more steps continues it.
    main(inputs + ["--steps", "4", "--batch-size", "8", "--lr", "1e-3", "--warmup", "1", "--eval-every", "0",
                   "--eval-examples", "4", "--out", str(run), "--resume", "--no-plot"])
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000004"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process_on_the_same_global_batch(tok, tmp_path):
    inputs = write_tiny_run_inputs(tmp_path, tok, dropout=False)
    args = ["--steps", "3", "--batch-size", "8", "--lr", "3e-3", "--warmup", "1", "--eval-every", "0",
            "--eval-examples", "2", "--no-plot", "--device", "cpu"]
    main(inputs + args + ["--out", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "minis2s.train"] + inputs + args + ["--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    logs = {n: [json.loads(x) for x in (tmp_path / n / "log.jsonl").read_text().splitlines()] for n in ("one", "two")}
    assert json.loads((tmp_path / "two" / "train_config.json").read_text())["world_size"] == 2
    for a, b in zip(logs["one"], logs["two"]):
        assert a["step"] == b["step"] and a.get("tokens") == b.get("tokens")
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    one = read_safetensors(tmp_path / "one" / "checkpoints" / "step-000003" / "model" / "model.safetensors")
    two = read_safetensors(tmp_path / "two" / "checkpoints" / "step-000003" / "model" / "model.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        assert_close(two[k], one[k], 1e-5, f"{k} after 3 steps, 2 processes vs 1")


def write_tiny_bert(root: Path, tok) -> Path:
    """A BERT checkpoint directory (a tiny random encoder in BERT's names, config, tokenizer) to warm-start from."""
    bert = root / "tiny-bert"
    bert.mkdir()
    model = make_model()
    write_safetensors(bert / "model.safetensors",
                      {stack_to_bert_name(k): v for k, v in model.encoder.named_parameters()})
    write_json(bert / "config.json", model.config.encoder.to_hf_dict())
    tok.save_pretrained(bert)
    return bert


TASK = {"train": TRAIN, "validation": VAL, "test": make_pairs(8, 2)}


def test_experiment_runs_every_configuration_and_writes_its_report(tok, tmp_path, capsys):
    """The warm-starting experiment end to end, on a tiny BERT checkpoint instead of MiniLM (2 steps each); its
    last lines name the trained model's directory and a generate command that runs on it as printed."""
    CONFIGS = experiment.CONFIGS
    bert = write_tiny_bert(tmp_path, tok)
    result = experiment.run(tmp_path / "exp", steps=2, batch_size=8, bert=str(bert), n_samples=3, eval_examples=4, task=TASK,
                 progress=False)
    rows = {r["config"]: r for r in result["rows"]}
    assert list(rows) == list(CONFIGS)
    assert all(r["steps"] == 2 for r in rows.values())
    assert rows["adapters"]["trainable_pct"] < 50 < rows["bert2bert"]["trainable_pct"]  # tiny: < 15% for MiniLM
    assert rows["bertshare"]["parameters"] < rows["bert2bert"]["parameters"] == rows["random"]["parameters"]
    table = (tmp_path / "exp" / "results.md").read_text()
    assert table.count("\n| ") == 5 and "Machine:" in table  # header + 4 rows
    samples = (tmp_path / "exp" / "samples.md").read_text()
    assert samples.count("- **source:**") == 3 and samples.count("BERTShare") == 3
    if (tmp_path / "exp" / "curves.png").exists() or require("matplotlib"):
        assert (tmp_path / "exp" / "curves.png").is_file()

    # Every configuration's model is written with its tokenizer; the adapter on its own as well.
    assert set(result["model_dirs"]) == set(CONFIGS)
    for name, model_dir in result["model_dirs"].items():
        assert EncoderDecoderModel.from_pretrained(model_dir).num_parameters() == rows[name]["parameters"] or \
            name == "adapters"  # the base model: the adapter's parameters are not in it
        assert load_tokenizer(model_dir).vocab_size == 99
    assert (tmp_path / "exp" / "adapters" / "adapter" / "adapter_config.json").is_file()
    # The last two lines: where the models are, and the command to try one, which must run as printed.
    written_line, model_line, try_line = capsys.readouterr().out.strip().splitlines()[-3:]
    assert written_line.startswith("written: ")  # only files that exist (no curves.png without matplotlib)
    assert all(Path(f).is_file() for f in written_line.removeprefix("written: ").split(", ")), written_line
    assert model_line.startswith("models: ") and str(result["model_dirs"]["bert2bert"]) in model_line
    assert try_line == f"try it: {result['command']}"
    argv = shlex.split(result["command"])
    assert argv[:4] == ["python", "-m", "minis2s", "generate"] and argv[4] == str(result["model_dirs"]["bert2bert"])
    assert argv[5] in {p.source for p in TASK["test"]}
    proc = subprocess.run([sys.executable] + argv[1:], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) == 1  # one generated line for the one source


def test_experiment_without_matplotlib_names_only_what_it_wrote(tok, tmp_path, capsys, monkeypatch):
    """matplotlib is not a runtime dependency: without it there is no curves.png, and no line may claim one."""
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `from matplotlib.figure import ...` fails
    experiment.run(tmp_path / "exp", configs=("bert2bert",), steps=1, batch_size=8, bert=str(write_tiny_bert(tmp_path, tok)),
        n_samples=1, eval_examples=2, task=TASK, progress=False)
    captured = capsys.readouterr()
    assert "matplotlib is not installed" in captured.err
    assert not (tmp_path / "exp" / "curves.png").exists()
    written = next(line for line in captured.out.splitlines() if line.startswith("written: "))
    assert written == f"written: {tmp_path / 'exp' / 'results.md'}, {tmp_path / 'exp' / 'samples.md'}"


def test_experiment_work_is_fixed_and_threads_are_chosen(monkeypatch):
    """--quick trains the README's 234 steps and the full experiment its 388, whatever the machine's speed; --steps
    overrides; --threads sets torch's threads; a bad value is a one-line usage error."""
    seen = {}
    monkeypatch.setattr(experiment, "run", lambda out, **kw: seen.update(kw, out=out))
    threads = torch.get_num_threads()
    try:
        cli(["experiment", "--quick", "--threads", "1"])
        assert (seen["steps"], seen["configs"], seen["out"], seen["minutes"]) == (234, ("bert2bert",), "runs/quick",
                                                                                  None)
        assert torch.get_num_threads() == 1 and seen["threads"].startswith("1 thread (--threads)")
        cli(["experiment", "--threads", "2"])
        assert (seen["steps"], seen["configs"]) == (388, experiment.CONFIGS) and torch.get_num_threads() == 2
        cli(["experiment", "--quick", "--steps", "50", "--minutes", "3"])
        assert (seen["steps"], seen["minutes"]) == (50, 3.0)
        for bad, what in ((["--threads", "0"], "--threads"), (["--steps", "-11"], "--steps"),
                          (["--minutes", "0"], "--minutes")):
            with pytest.raises(SystemExit, match=f"^error: {what} must be") as e:
                cli(["experiment", "--quick"] + bad)
            assert "\n" not in str(e.value.code)
    finally:
        torch.set_num_threads(threads)


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    """Without --threads: the cores not already busy (load average), at least 1; OMP_NUM_THREADS wins if set."""
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(train_module, "_TORCH_THREADS", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    try:
        for load, expected in ((0.2, 2), (0.6, 1), (1.1, 1), (3.5, 1)):
            monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)
            n, why = train_module.choose_threads()
            assert n == expected == torch.get_num_threads(), (load, why)
            assert "2 cores, load average" in why and "--threads" in why
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert train_module.choose_threads()[1].endswith("(OMP_NUM_THREADS=1)")
    finally:
        torch.set_num_threads(threads)


def test_thread_count_changes_losses_only_by_float_rounding(tok):
    threads, losses = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            history = train(make_model(), tok, TRAIN, VAL, fast(steps=4))
            losses.append([r["loss"] for r in history["train"]])
    finally:
        torch.set_num_threads(threads)
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_too_small_a_budget_stops_with_one_line(tok, tmp_path):
    """--minutes that cannot fit the work: exit status 1 after the first timed steps, one line on stderr with the
    estimate and the option to change, no traceback, never a negative step count."""
    bert = write_tiny_bert(tmp_path, tok)
    for split, pairs in TASK.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(p._asdict()) + "\n" for p in pairs))
    # The command line as a user runs it, with the docstring task replaced by the tiny one (its vocabulary has none
    # of the stdlib's names).
    launcher = ("import sys, minis2s.data as d\n"
                f"root = {str(tmp_path)!r}\n"
                "task = {s: d.load_pairs(f'{root}/{s}.jsonl') for s in ('train', 'validation', 'test')}\n"
                "d.build_docstring_task = lambda *a, **k: task\n"
                "from minis2s.__main__ import main\nmain(sys.argv[1:])")
    out = tmp_path / "exp"
    cmd = [sys.executable, "-c", launcher, "experiment", "--bert", str(bert), "--steps", "40", "--batch-size", "8",
           "--minutes", "0.001", "--out", str(out), "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: this run needs about ") and "more than --minutes 0.001: give --minutes " in last
    assert "-" not in last.split("steps")[0].split("s/step x ")[1], last  # the step count printed is the fixed 40
    steps_done = [json.loads(x)["step"] for x in (out / "random" / "log.jsonl").read_text().splitlines()]
    assert len(steps_done) <= 6  # it stopped at the first check, not after the work


@pytest.mark.parametrize("with_tqdm", [True, False])
def test_progress_on_stderr_with_an_eta(tok, capsys, monkeypatch, with_tqdm):
    """On a terminal: tqdm's bars (the `progress` extra) for training and evaluation. Without tqdm, or in a log file:
    no bar, one plain line per log_every steps with the time left, none rewritten in place. Only train.py imports
    tqdm (the model code never does)."""
    if with_tqdm:
        require("tqdm")
    else:
        monkeypatch.setattr(train_module, "tqdm", None)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    model = make_model()
    train(model, tok, TRAIN, VAL, fast(steps=3, log_every=1, progress=True, eval_every=0))
    evaluate(model, tok, VAL, progress="test")
    out, err = capsys.readouterr()
    assert out == ""
    if with_tqdm:
        assert "train: 100%" in err and "3/3" in err and "test: 100%" in err and "16/16" in err
    else:
        lines = [x for x in err.splitlines() if x.startswith("train: ")]
        assert [x.split(" | ")[0] for x in lines] == ["train: 1/3 steps", "train: 2/3 steps", "train: 3/3 steps"]
        assert lines[-1].endswith("ETA 0s") and "test" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a log file: plain lines even with tqdm installed
    train(make_model(), tok, TRAIN, VAL, fast(steps=4, log_every=2, progress=True, eval_every=0))
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("train: ")]
    assert [x.split(" | ")[0] for x in lines] == ["train: 2/4 steps", "train: 4/4 steps"], lines
    assert all("ETA" in x and "\r" not in x for x in lines)
    core = Path(__file__).resolve().parents[1] / "minis2s"
    importers = sorted(p.name for p in core.glob("*.py") if "tqdm" in p.read_text(encoding="utf-8"))
    assert importers == ["train.py"], importers
