"""The test harness itself (tests/conftest.py) in both environments: [test] (transformers 4.57.6 + adapters 1.3.0)
and [test-latest] (transformers 5.x, no adapters).

  - the installed transformers version is read right, so every version branch takes the right side;
  - `require_adapters` skips, with the reason, exactly where adapters cannot be installed (transformers >= 5, even
    with CI=true), and elsewhere behaves like `require` (skip locally, fail in CI, return the module);
  - `twin_grad` gives a BERTShare tensor's gradient whether transformers ties it (4.x) or holds two copies (5.x).

Run: python -m pytest tests/test_harness.py -q
"""

import sys

import pytest
import torch

import conftest
from conftest import assert_close, hf_twin, random_batch, require, tiny_config, twin_grad
from minis2s import EncoderDecoderModel


def test_installed_version_is_the_imported_one():
    transformers = require("transformers")
    assert conftest.TRANSFORMERS_VERSION == tuple(int(x) for x in transformers.__version__.split(".")[:3])
    assert conftest.TRANSFORMERS_5 == (int(transformers.__version__.split(".")[0]) >= 5)
    assert conftest.installed_version("no-such-distribution-minis2s") is None


@pytest.mark.parametrize("in_ci", [False, True])
def test_require_adapters_skips_next_to_transformers_5(monkeypatch, in_ci):
    monkeypatch.setattr(conftest, "IN_CI", in_ci)
    monkeypatch.setattr(conftest, "TRANSFORMERS_VERSION", (5, 24, 0))
    monkeypatch.setattr(conftest, "TRANSFORMERS_5", True)
    with pytest.raises(pytest.skip.Exception, match=r"adapters 1\.3\.0 requires transformers ~=4\.57\.6.*5\.24\.0"):
        conftest.require_adapters()


@pytest.mark.parametrize("in_ci, outcome", [(False, pytest.skip.Exception), (True, pytest.fail.Exception)])
def test_require_adapters_with_transformers_4_is_require(monkeypatch, in_ci, outcome):
    """With transformers 4.x a missing adapters is a broken [test] install: a skip locally, a failure in CI."""
    monkeypatch.setattr(conftest, "IN_CI", in_ci)
    monkeypatch.setattr(conftest, "TRANSFORMERS_VERSION", (4, 57, 6))
    monkeypatch.setattr(conftest, "TRANSFORMERS_5", False)
    monkeypatch.setitem(sys.modules, "adapters", None)  # makes `import adapters` raise ImportError
    with pytest.raises(outcome, match="adapters is a test reference; install the \\[test\\] extra"):
        conftest.require_adapters()


def test_require_adapters_returns_the_library_where_it_can_run():
    adapters = conftest.require_adapters()  # skips in the [test-latest] environment, with the reason
    assert adapters.__name__ == "adapters" and not conftest.TRANSFORMERS_5


def test_twin_grad_of_a_shared_tensor():
    """BERTShare: minis2s's gradient of a shared tensor equals transformers', summed over its copies in 5.x."""
    torch.manual_seed(0)
    ours = EncoderDecoderModel(tiny_config(tie=True, kernel="eager")).eval()
    hf = hf_twin(ours)
    enc, dec = hf.encoder.encoder.layer[0].output.dense.weight, hf.decoder.bert.encoder.layer[0].output.dense.weight
    assert (enc is dec) == conftest.TIES_ENCODER_DECODER == (not conftest.TRANSFORMERS_5)
    batch = random_batch(ours.config.decoder.vocab_size)
    for m in (ours, hf):
        m(**batch).loss.backward()
    name = "encoder.layers.0.ffn.down.weight"  # used by both stacks
    grad = dict(ours.named_parameters())[name].grad
    if not conftest.TIES_ENCODER_DECODER:  # each copy alone has only part of the gradient (far above rounding)
        scale = grad.abs().max()
        assert (enc.grad - grad).abs().max() > 1e-3 * scale and (dec.grad - grad).abs().max() > 1e-3 * scale
    assert_close(twin_grad(ours, hf, name), grad, 1e-6, name)
    assert twin_grad(ours, hf, "encoder.pooler.weight") is None  # not in the loss of either library
