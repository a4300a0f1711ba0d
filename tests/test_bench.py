"""The benchmark's pieces (bench/bench.py) on a tiny model: every task runs on both libraries and generates the
same ids, peak memory is measured, and the bytes-per-token count of the decoding floor matches a count by hand.

Run: python -m pytest tests/test_bench.py -q
"""

import importlib
import sys
from pathlib import Path

import pytest

from conftest import hf_twin, require
from test_fastpath import tiny_model


@pytest.fixture
def bench():
    """bench/bench.py as a module (it imports transformers, the reference it times)."""
    require("transformers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    return importlib.import_module("bench")


def test_bench_tasks_on_a_tiny_model(bench, monkeypatch):

    model = tiny_model("sdpa", layers=1, vocab=1200, max_pos=200)
    hf = hf_twin(model, "sdpa")
    for name, value in {"NEW_TOKENS": 3, "SRC_LEN": 16, "TGT_LEN": 5, "BATCH": 2}.items():
        monkeypatch.setattr(bench, name, value)
    x = bench.make_inputs(1200, "cpu")
    opts = bench.Options(models=[], kernels=["sdpa"], tasks=bench.TASKS, repeats=1)
    for task in bench.TASKS:
        opts.memory = task in ("encoder", "beam4")  # the profiler is slow: two tasks show it works
        r = bench.bench_task(task, model, hf, x, opts)
        assert r["minis2s"]["runs"] == r["transformers"]["runs"] == 1 and r["ratio"] > 0
        if opts.memory:
            assert r["minis2s"]["peak_bytes"] > 0 and r["transformers"]["peak_bytes"] > 0, task
        if task != "encoder" and task != "train":
            assert r["same_ids"], f"{task}: the two libraries generated different ids"
    entry = {"parameters": model.num_parameters(), "repeats": 1, "kernels": {"sdpa": {"beam4": r}}}
    md = bench.markdown({"device": "cpu", "threads": 2, "cpu_count": 2, "torch": "t", "transformers": "t",
                         "models": {"tiny": entry}})
    assert "| tiny | sdpa | beam4 |" in md and "1 runs per side" in md


def test_floor_bytes_by_hand(bench):
    model = tiny_model(hidden=24, heads=3, layers=2, inter=37, vocab=99)
    C, I, V, L = 24, 37, 99, 2
    per_layer = (4 * (C * C + C)  # self-attention Q, K, V, O
                 + 2 * (C * C + C)  # cross-attention Q, O (its K, V were computed once)
                 + (C * I + I) + (I * C + C)  # FFN
                 + 3 * 2 * C)  # three LayerNorms
    head = (C * C + C) + 2 * C + V + V * C  # transform dense, LayerNorm, bias, tied embedding matrix
    rows = 3 * C + 2 * C  # one word, position and type row; the embedding LayerNorm
    b = bench.decode_floor_bytes(model, src_len=9, new_tokens=4)
    assert b["decoder_layers"] == 4 * L * per_layer and b["lm_head"] == 4 * head and b["embedding_rows"] == 4 * rows
    assert b["cross_kv_cache"] == 4 * 2 * L * 9 * C
