"""Bottleneck adapters (minis2s/adapters.py, adapters_compat.py) against the adapters library 1.3.0 on transformers'
EncoderDecoderModel.

The proof is parity: the same base weights (conftest `hf_twin`) and the same adapter weights, perturbed with random
values so that every term matters (zero-initialised W_up, LayerNorms, gates, scalings), give the same logits, loss and
gradients of every adapter parameter for every preset, flag and Stack; greedy generation gives the same ids; adapter
files move both ways with identical outputs. "The same" is judged as in test_parity.py, by tests/numerics.py: the
adapters model also runs in float64, and minis2s's float32 error against it must be at most 4x the adapters
library's own float32 error plus 8 ulps (fp32 CPU, eval mode), a rule that holds on any CPU. Then what adapters
1.3.0 lacks: one-stack placement, train_cross_attention, adapters in the model's dtype, strict loading, no crash on
the flag combinations that crash it. The three small modules of adapters.py (Houlsby, Pfeiffer, Parallel) are built
exactly for the configs that are their idea, and from the same weights give bit-identical (torch.equal) outputs and
gradients to the general flag-driven module, alone and in a Stack, in train and eval mode. Last, the bert-base
bert2bert parameter counts (seq_bn 24 modules / 1,789,056 parameters; double_seq_bn 60 / 4,472,640), built on the meta
device.

Run: python -m pytest -q tests/test_adapters.py
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import DEVICES, assert_close, hf_twin, random_batch, require, require_adapters, tiny_config
from numerics import assert_accurate, float64_twin, gradient_scale
from minis2s import adapters_compat as A
from minis2s.adapters import Houlsby, Parallel, Pfeiffer
from minis2s.adapters_compat import BnConfig, DoubleSeqBnConfig, FlagBottleneck, ParBnConfig, SeqBnConfig, Stack
from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from
from minis2s.generation import generate
from minis2s import EncoderDecoderModel


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread only adds spin-waiting, which on a busy 2-core machine costs 30x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lib():
    return require_adapters()  # skips, saying why, in the transformers 5 environment


# -- helpers --------------------------------------------------------------------------------------------------------

def lib_config(lib, config):
    """The same config for the adapters library: a preset name as is, else every field of our file format."""
    if isinstance(config, str):
        return config
    d = A.resolve_config(config).to_dict()
    d.pop("stacks", None)
    return lib.BnConfig(**d)


def perturb(model, name, seed):
    """Add N(0, 0.3) noise to every parameter of adapter `name`: nothing stays at a special value (0 or 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in A.adapter_parameters(model, name).values():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def copy_to_lib(model, hf, names):
    """Load minis2s's adapter tensors into the adapters model by name; every adapter tensor there must be covered."""
    state = {k: v.detach().clone() for n in names for k, v in A.adapter_parameters(model, n).items()}
    _, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    theirs = {k for k in hf.state_dict() if ".adapters." in k and ".adapter_norm_before." not in k}
    assert theirs == set(state), (sorted(theirs ^ set(state)))[:6]


def pair(lib, configs: dict, seed=0, act="gelu", **cfg):
    """A tiny minis2s model and its transformers + adapters twin, with the same (perturbed) adapters added."""
    torch.manual_seed(seed)
    model = EncoderDecoderModel(tiny_config(act=act, **cfg)).eval()
    hf = hf_twin(model, "eager")
    lib.init(hf)
    for k, (name, config) in enumerate(configs.items()):
        A.add_adapter(model, name, config)
        hf.add_adapter(name, config=lib_config(lib, config))
        perturb(model, name, seed=100 + k)
    copy_to_lib(model, hf, configs)
    return model, hf


def lib_setup(lib, setup):
    return lib.Stack(*setup) if isinstance(setup, Stack) else setup


def assert_same_logits(model, hf, batch, what):
    """minis2s's logits are as accurate as the adapters model's, against its float64 twin (tests/numerics.py)."""
    with torch.no_grad():
        assert_accurate(model(**batch).logits, hf(**batch).logits, float64_twin(hf)(**batch).logits, what)


def check_parity(lib, model, hf, setup, batch=None, grads=True):
    """Logits, loss and (optionally) every adapter gradient of minis2s vs adapters for one active setup."""
    batch = batch or random_batch(model.config.encoder.vocab_size)
    A.set_active_adapters(model, setup)
    hf.set_active_adapters(lib_setup(lib, setup))
    truth = float64_twin(hf)  # the ground truth (tests/numerics.py), with the same active setup
    for m in (model, hf, truth):
        m.zero_grad(set_to_none=True)
    ours, theirs, exact = model(**batch), hf(**batch), truth(**batch)
    assert_accurate(ours.logits, theirs.logits, exact.logits, "logits")
    assert_accurate(ours.loss, theirs.loss, exact.loss, "loss")
    if grads:
        for out in (ours, theirs, exact):
            out.loss.backward()
        hf_params = dict(hf.named_parameters(remove_duplicate=False))
        truth_params = dict(truth.named_parameters(remove_duplicate=False))
        scale = gradient_scale(truth)
        names = setup if isinstance(setup, Stack) else [setup]
        for name in names:
            for key, p in A.adapter_parameters(model, name).items():
                if p.grad is None:  # e.g. a in Stack(a, parallel b): b restarts from x, a's output is unused
                    assert hf_params[key].grad is None, f"{key}: no gradient here, one in adapters"
                    continue
                assert_accurate(p.grad, hf_params[key].grad, truth_params[key].grad, f"gradient of {key}", scale)
    return ours


# -- parity: every preset and flag ---------------------------------------------------------------------------------

BASE = dict(mh_adapter=True, output_adapter=True, reduction_factor=4, non_linearity="relu")
CASES = {
    **{p: p for p in ("seq_bn", "pfeiffer", "double_seq_bn", "houlsby", "par_bn", "parallel", "scaled_par_bn",
                      "scaled_parallel")},
    "leave_out": DoubleSeqBnConfig(reduction_factor=4, leave_out=[0]),
    "rf_per_layer": DoubleSeqBnConfig(reduction_factor={"1": 2, "default": 6}),
    "rf_below_one": SeqBnConfig(reduction_factor=0.5),  # d = 48 > C: an up-projection
    **{f"act_{a}": DoubleSeqBnConfig(reduction_factor=4, non_linearity=a)
       for a in ("relu", "swish", "silu", "gelu", "gelu_new", "leakyrelu")},
    "ln_before": BnConfig(**BASE, ln_before=True),
    "ln_after": BnConfig(**BASE, ln_after=True),
    "ln_both_adapter_residual_before_ln": BnConfig(**BASE, ln_before=True, ln_after=True,
                                                   adapter_residual_before_ln=True),
    "gating": BnConfig(**BASE, use_gating=True),
    "scaling_float": BnConfig(**BASE, scaling=0.5),
    "scaling_int": BnConfig(**BASE, scaling=3),  # adapters 1.3.0 rejects the int; the file carries 3.0
    "scaling_learned": BnConfig(**BASE, scaling="learned"),
    "scaling_channel": BnConfig(**BASE, scaling="channel"),
    "residual_false": BnConfig(**BASE, residual_before_ln=False),
    "residual_false_original_ln_before": BnConfig(**BASE, residual_before_ln=False, original_ln_before=True),
    "residual_post_add": BnConfig(**BASE, residual_before_ln="post_add", original_ln_before=True),
    "no_original_ln_after": SeqBnConfig(reduction_factor=4, original_ln_after=False),
    "parallel_everything": ParBnConfig(mh_adapter=True, ln_after=True, use_gating=True, scaling="channel"),
    "parallel_no_original_ln_after": ParBnConfig(original_ln_after=False),
    "dropout_in_eval": BnConfig(**BASE, dropout=0.3),
    "init_houlsby": BnConfig(**BASE, init_weights="houlsby", use_gating=True),
    "everything": BnConfig(mh_adapter=True, output_adapter=True, reduction_factor={"0": 3, "default": 8},
                           non_linearity="gelu_new", original_ln_before=True, ln_before=True, ln_after=True,
                           use_gating=True, scaling="learned", residual_before_ln="post_add", leave_out=[1]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_adapters(lib, case):
    model, hf = pair(lib, {"a": CASES[case]})
    check_parity(lib, model, hf, "a")
    # Inactive, both are the plain model again.
    A.set_active_adapters(model, None)
    hf.set_active_adapters(None)
    batch = random_batch(99)
    assert_same_logits(model, hf, batch, "logits without active adapters")


STACKS = {
    "seq_then_double": {"a": SeqBnConfig(reduction_factor=4), "b": DoubleSeqBnConfig(reduction_factor=6)},
    "leave_out_differs": {"a": DoubleSeqBnConfig(reduction_factor=4, leave_out=[0]),
                          "b": BnConfig(**BASE, ln_after=True, residual_before_ln=False, leave_out=[1])},
    "seq_then_parallel": {"a": BnConfig(**BASE, use_gating=True), "b": ParBnConfig(scaling="learned")},
}


@pytest.mark.parametrize("case", list(STACKS))
def test_stack_parity_with_adapters(lib, case):
    model, hf = pair(lib, STACKS[case])
    check_parity(lib, model, hf, Stack("a", "b"))
    check_parity(lib, model, hf, Stack("b", "a"), grads=False)


def test_bertshare_parity(lib):
    """Tied encoder/decoder: adapters stay separate per stack (transformers ties parameters, not modules)."""
    model, hf = pair(lib, {"a": DoubleSeqBnConfig(reduction_factor=4)}, tie=True)
    check_parity(lib, model, hf, "a")


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam3"])
def test_generation_matches_adapters(lib, num_beams):
    # Gating averages over the positions it sees: with a KV cache, only the newest one -- in both libraries.
    model, hf = pair(lib, {"a": DoubleSeqBnConfig(reduction_factor=4, use_gating=True, ln_after=True)})
    A.set_active_adapters(model, "a")
    hf.set_active_adapters("a")
    batch = random_batch(99, B=3, S=9)
    kw = dict(max_new_tokens=12, num_beams=num_beams)
    with torch.no_grad():
        ours = generate(model, batch["input_ids"], batch["attention_mask"], **kw)
        theirs = hf.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=False,
                             **kw)
        A.set_active_adapters(model, None)
        plain = generate(model, batch["input_ids"], batch["attention_mask"], **kw)
    assert ours.tolist() == theirs.tolist()
    assert ours.tolist() != plain.tolist()  # and the adapter did change what was generated


# -- the three small modules: chosen exactly for their idea, and equal to the general module bit for bit ------------

@pytest.mark.parametrize("config, expected", [
    ("double_seq_bn", Houlsby), ("houlsby", Houlsby), ("seq_bn", Pfeiffer), ("pfeiffer", Pfeiffer),
    ("par_bn", Parallel), ("scaled_par_bn", Parallel),
    # The same flags with another size, non-linearity, init, placement or constant s: still the idea.
    (DoubleSeqBnConfig(reduction_factor={"0": 2, "default": 8}, non_linearity="gelu", init_weights="houlsby",
                       leave_out=[1]), Houlsby),
    (SeqBnConfig(mh_adapter=True, init_weights_seed=3, stacks=("decoder",)), Pfeiffer),
    (ParBnConfig(scaling=2.0, init_weights="bert", non_linearity="leakyrelu"), Parallel),
    # One flag more: the general module.
    (SeqBnConfig(ln_after=True), FlagBottleneck), (DoubleSeqBnConfig(scaling=2.0), FlagBottleneck),
    (DoubleSeqBnConfig(residual_before_ln=False), FlagBottleneck), (SeqBnConfig(dropout=0.1), FlagBottleneck),
    (ParBnConfig(scaling="channel"), FlagBottleneck), (ParBnConfig(use_gating=True), FlagBottleneck),
    (SeqBnConfig(original_ln_after=False), FlagBottleneck),
    (BnConfig(**BASE), Houlsby),  # the parity cases' base config is Houlsby's flags
], ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", None))
def test_add_adapter_builds_the_small_module_of_an_idea(config, expected):
    model = EncoderDecoderModel(tiny_config())
    A.add_adapter(model, "a", config)
    assert module_types(model, "a") == {expected}


def module_types(model, name):
    """The classes of adapter `name`'s modules, over every site of both stacks."""
    return {type(site[name]) for layer in [*model.encoder.layers, *model.decoder.layers]
            for site in layer.adapters.values() if name in site}


def as_general(model):
    """A copy of `model` with every adapter module replaced by a FlagBottleneck holding the same weights."""
    twin = copy.deepcopy(model)
    for layer in [*twin.encoder.layers, *twin.decoder.layers]:
        for site in layer.adapters.values():
            for name, small in site.items():
                general = FlagBottleneck(twin.adapters_config[name], small.down.in_features, small.down.out_features)
                general.load_state_dict(small.state_dict())  # strict: the same parameter names, nothing missing
                site[name] = general.train(small.training)
    return twin


IDEA_SETUPS = {**{p: p for p in ("double_seq_bn", "seq_bn", "par_bn", "scaled_par_bn")},
               "stack_houlsby_pfeiffer": Stack("double_seq_bn", "seq_bn"),
               "stack_pfeiffer_parallel": Stack("seq_bn", "par_bn"),
               "stack_parallel_houlsby": Stack("scaled_par_bn", "double_seq_bn")}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("setup", list(IDEA_SETUPS))
def test_small_modules_equal_the_general_module(setup, mode):
    """Houlsby / Pfeiffer / Parallel compute exactly what FlagBottleneck computes for their preset: torch.equal."""
    torch.manual_seed(0)
    model = EncoderDecoderModel(tiny_config())
    for k, preset in enumerate(("double_seq_bn", "seq_bn", "par_bn", "scaled_par_bn")):
        A.add_adapter(model, preset, preset)
        perturb(model, preset, seed=10 + k)  # W_up of par_bn leaves zero, s of scaled_par_bn leaves one
    general = as_general(model)
    assert module_types(model, "seq_bn") == {Pfeiffer} and module_types(general, "seq_bn") == {FlagBottleneck}
    batch = random_batch(99)
    outs = []
    for m in (model, general):
        A.set_active_adapters(m, IDEA_SETUPS[setup])
        m.train(mode == "train")
        torch.manual_seed(1)  # the same dropout masks in train mode
        out = m(**batch)
        out.loss.backward()
        outs.append((out, dict(m.named_parameters())))
    (ours, ours_p), (theirs, theirs_p) = outs
    assert torch.equal(ours.logits, theirs.logits), f"max abs diff {(ours.logits - theirs.logits).abs().max()}"
    assert torch.equal(ours.loss, theirs.loss)
    assert ours_p.keys() == theirs_p.keys()
    for n, p in ours_p.items():  # every gradient: adapters' and the base model's
        q = theirs_p[n]
        assert (p.grad is None) == (q.grad is None), n
        assert p.grad is None or torch.equal(p.grad, q.grad), f"{n}: max abs diff {(p.grad - q.grad).abs().max()}"
    assert any(".adapters." in n and p.grad is not None and p.grad.abs().max() > 0 for n, p in ours_p.items())


# -- init, training ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["par_bn", "scaled_par_bn",
                                    SeqBnConfig(init_weights="mam_adapter", use_gating=True, ln_after=True),
                                    DoubleSeqBnConfig(init_weights="mam_adapter", ln_before=True, scaling="channel")],
                         ids=["par_bn", "scaled_par_bn", "seq_bn_mam", "double_seq_bn_mam"])
def test_mam_adapter_init_is_an_exact_identity(config):
    torch.manual_seed(0)
    model = EncoderDecoderModel(tiny_config()).eval()
    batch = random_batch(99)
    plain = model(**batch).logits
    A.add_adapter(model, "a", config, set_active=True)
    assert A.adapter_parameters(model, "a")  # the adapter is there and active ...
    assert torch.equal(model(**batch).logits, plain)  # ... and changes nothing, bit for bit


@pytest.mark.parametrize("train_cross_attention, train_lm_head", [(False, False), (True, False), (True, True)])
def test_train_adapter_trains_only_the_adapter(lib, train_cross_attention, train_lm_head):
    model, hf = pair(lib, {"a": DoubleSeqBnConfig(reduction_factor=4), "b": SeqBnConfig(reduction_factor=4)})
    A.train_adapter(model, "a", train_cross_attention=train_cross_attention, train_lm_head=train_lm_head)
    assert model.training and all(m.training for m in model.modules())
    assert model.active_adapters == Stack("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    cross = {n for n, _ in model.named_parameters() if ".cross_attn." in n or ".cross_ln." in n}
    adapter_a = {n for n, _ in model.named_parameters() if ".adapters." in n and n.split(".")[5] == "a"}
    head = {"lm_head.dense.weight", "lm_head.dense.bias", "lm_head.ln.weight", "lm_head.ln.bias", "lm_head.bias"}
    expected = adapter_a | (cross if train_cross_attention else set()) | (head if train_lm_head else set())
    assert adapter_a and trainable == expected  # the tied word embeddings stay frozen even with train_lm_head
    # adapters' train_adapter unfreezes the same tensors (cross-attention aside, which it cannot train).
    hf.train_adapter("a")
    hf_trainable = {n for n, p in hf.named_parameters() if p.requires_grad}
    assert hf_trainable == set(A.adapter_parameters(model, "a"))
    # One AdamW step changes the trainable parameters and nothing else.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**random_batch(99)).loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (n in trainable), f"{n}: changed={changed}, trainable={n in trainable}"


def test_adapter_summary_matches_adapters(lib):
    model, hf = pair(lib, {"a": "double_seq_bn", "b": BnConfig(**BASE, ln_before=True, use_gating=True,
                                                                 scaling="channel")})
    A.set_active_adapters(model, "a")
    hf.set_active_adapters("a")
    ours = {r["name"]: r for r in A.adapter_summary(model, as_dict=True)}
    theirs = {r["name"]: r for r in hf.adapter_summary(as_dict=True)}
    for name in ("a", "b", "Full model"):
        assert ours[name]["#param"] == theirs[name]["#param"], name
        assert ours[name]["%param"] == pytest.approx(theirs[name]["%param"]), name
    assert ours["a"]["active"] and not ours["b"]["active"]
    # An adapters-library config object is a Mapping: it is accepted as is.
    assert A.resolve_config(lib.BnConfig(**BASE, scaling="channel")) == BnConfig(**BASE, scaling="channel")
    table = A.adapter_summary(model)
    assert "Full model" in table and f"{ours['a']['#param']:,}" in table


def test_delete_adapter_restores_the_plain_model():
    torch.manual_seed(0)
    model = EncoderDecoderModel(tiny_config()).eval()
    batch = random_batch(99)
    plain = model(**batch).logits
    A.add_adapter(model, "a", "double_seq_bn")
    A.add_adapter(model, "b", "seq_bn")
    A.set_active_adapters(model, Stack("a", "b"))
    assert not torch.equal(model(**batch).logits, plain)
    assert copy.deepcopy(model).active_adapters == Stack("a", "b")  # a Stack survives copying (and pickling)
    A.delete_adapter(model, "a")
    assert model.active_adapters == Stack("b")
    A.delete_adapter(model, "b")
    assert model.active_adapters is None and model.adapters_config == {}
    assert all(len(layer.adapters) == 0 for layer in [*model.encoder.layers, *model.decoder.layers])
    assert torch.equal(model(**batch).logits, plain)
    with pytest.raises(ValueError, match="no adapter named 'a'"):
        A.delete_adapter(model, "a")


def test_api_errors_name_the_problem():
    model = EncoderDecoderModel(tiny_config())
    A.add_adapter(model, "a")  # default: seq_bn, as in adapters
    assert model.adapters_config["a"] == SeqBnConfig()
    with pytest.raises(ValueError, match="already has an adapter named 'a'"):
        A.add_adapter(model, "a", "par_bn")
    A.add_adapter(model, "a", "par_bn", overwrite_ok=True)
    assert model.adapters_config["a"].is_parallel
    with pytest.raises(ValueError, match="no adapter named 'zz'"):
        A.set_active_adapters(model, Stack("a", "zz"))
    with pytest.raises(ValueError, match="unknown adapter config 'lora'"):
        A.add_adapter(model, "b", "lora")
    with pytest.raises(ValueError, match="without '.'"):
        A.add_adapter(model, "b.c")
    with pytest.raises(ValueError, match="no entry for layer 0"):
        A.add_adapter(model, "b", SeqBnConfig(reduction_factor={"1": 4}))
    with pytest.raises(ValueError, match="would add no module"):
        A.add_adapter(model, "b", SeqBnConfig(leave_out=[0, 1]))
    assert list(model.adapters_config) == ["a"]  # nothing half-added
    with pytest.raises(ValueError, match="non_linearity 'tanhh'"):
        SeqBnConfig(non_linearity="tanhh")
    with pytest.raises(TypeError, match="nested compositions"):
        Stack("a", Stack("a"))


# -- what adapters 1.3.0 does not do -------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_adapters_in_one_stack_only(lib, stack, tmp_path):
    config = DoubleSeqBnConfig(reduction_factor=4, stacks=(stack,))
    model, hf = pair(lib, {}, seed=1)
    A.add_adapter(model, "a", config)
    perturb(model, "a", seed=5)
    other = "decoder" if stack == "encoder" else "encoder"
    assert all(len(layer.adapters) == 0 for layer in getattr(model, other).layers)
    assert {s for layer in getattr(model, stack).layers for s in layer.adapters} == \
           ({"attn", "ffn"} if stack == "encoder" else {"attn", "cross", "ffn"})
    # adapters cannot do this; emulate it there by deleting the other stack's modules after adding everywhere.
    hf.add_adapter("a", config=lib_config(lib, config))
    hf_other = hf.encoder.encoder if other == "encoder" else hf.decoder.bert.encoder
    for layer in hf_other.layer:
        cross = getattr(layer, "crossattention", None)
        for site in (layer.attention.output, layer.output, cross.output if cross is not None else None):
            if site is not None:
                del site.adapters["a"]
    copy_to_lib(model, hf, ["a"])
    check_parity(lib, model, hf, "a")
    # The file says so; minis2s reads it back. adapters 1.3.0 tolerates the extra field but ignores it.
    A.save_adapter(model, tmp_path / "a", "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["config"]["stacks"] == [stack]
    twin = EncoderDecoderModel(model.config).eval()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if ".adapters." not in k})
    A.load_adapter(twin, tmp_path / "a", set_active=True)
    batch = random_batch(99)
    assert torch.equal(twin(**batch).logits, model(**batch).logits)
    _, hf2 = pair(lib, {}, seed=1)
    hf2.load_adapter(str(tmp_path / "a"), use_safetensors=True)
    hf2_other = hf2.encoder.encoder if other == "encoder" else hf2.decoder.bert.encoder
    assert "a" in hf2_other.layer[0].output.adapters  # there it lands in both stacks


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_adapters_are_created_in_the_model_dtype_and_device(dtype, device):
    torch.manual_seed(0)
    model32 = EncoderDecoderModel(tiny_config()).eval()
    model = EncoderDecoderModel(tiny_config()).eval()
    model.load_state_dict(model32.state_dict())
    model.to(device=device, dtype=dtype)
    for m in (model32, model):
        A.add_adapter(m, "a", BnConfig(**BASE, ln_before=True, use_gating=True, scaling="channel"), set_active=True)
    model.load_state_dict(model32.state_dict())  # the same adapter weights (adapters 1.3.0: fp32 whatever, #766)
    for p in A.adapter_parameters(model, "a").values():
        assert p.dtype == dtype and p.device.type == device
    batch = {k: v.to(device) for k, v in random_batch(99).items()}
    logits = model(**batch).logits
    assert logits.dtype == dtype
    # Against the float32 model: in float64 the difference is float32's own error on this 2-layer model (~1e-7,
    # a few ulps of logits of size ~1; 1e-5 leaves 100x); in bfloat16 (eps 7.8e-3) it is bfloat16's (~1e-2).
    assert_close(logits, model32(**random_batch(99)).logits, 1e-5 if dtype == torch.float64 else 0.1, "logits")


def test_flag_combinations_that_crash_adapters(lib, tmp_path):
    batch = random_batch(99)
    # 1. residual_before_ln="post_add" without original_ln_before: adapters fails in the forward pass; we refuse early.
    bad = dict(BASE, residual_before_ln="post_add")
    _, hf = pair(lib, {})
    hf.add_adapter("a", config=lib.BnConfig(**bad), set_active=True)
    with pytest.raises(UnboundLocalError):
        hf(**batch)
    with pytest.raises(ValueError, match="post_add.*needs original_ln_before=True"):
        A.add_adapter(EncoderDecoderModel(tiny_config()), "a", dict(bad))
    # 2. ln_before cannot be saved as safetensors by adapters (the LayerNorm is listed twice); ours loads there.
    model, hf = pair(lib, {"a": BnConfig(**BASE, ln_before=True)})
    with pytest.raises(RuntimeError, match="share memory"):
        hf.save_adapter(str(tmp_path / "lib"), "a", use_safetensors=True)
    A.save_adapter(model, tmp_path / "ours", "a")
    _, hf2 = pair(lib, {})
    hf2.load_adapter(str(tmp_path / "ours"), use_safetensors=True, set_active=True)
    A.set_active_adapters(model, "a")
    assert_same_logits(model, hf2, batch, "logits after adapters loaded our ln_before file")
    # 3. An integer scaling is refused by adapters; ours is the float (the parity case "scaling_int" checks outputs).
    with pytest.raises(ValueError, match="Unknown scaling type"):
        hf.add_adapter("c", config=lib.BnConfig(**BASE, scaling=3))
    assert BnConfig(**BASE, scaling=3).to_dict()["scaling"] == 3.0
    # 4. Integer keys in a per-layer reduction factor are silently ignored by adapters; we read them as layer ids.
    assert A.resolve_config(SeqBnConfig(reduction_factor={1: 2, "default": 4})).rf_for_layer(1) == 2


# -- files, both ways ----------------------------------------------------------------------------------------------

FILE_CASES = {
    "double_seq_bn": DoubleSeqBnConfig(reduction_factor=4),
    "everything": CASES["everything"],
    "scaled_par_bn": "scaled_par_bn",
}


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("case", list(FILE_CASES))
def test_minis2s_file_loads_in_adapters(lib, tmp_path, case, safe):
    model, _ = pair(lib, {"a": FILE_CASES[case]})
    A.save_adapter(model, tmp_path, "a", safe=safe)
    assert sorted(p.name for p in tmp_path.iterdir()) == \
           sorted(["adapter.safetensors" if safe else "pytorch_adapter.bin", "adapter_config.json"])
    _, hf = pair(lib, {})
    assert hf.load_adapter(str(tmp_path), load_as="b", use_safetensors=safe, set_active=True) == "b"
    A.set_active_adapters(model, "a")
    batch = random_batch(99)
    assert_same_logits(model, hf, batch, "logits: minis2s file in adapters")


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("case", list(FILE_CASES) + ["ln_before"])
def test_adapters_file_loads_in_minis2s(lib, tmp_path, case, safe):
    config = CASES[case] if case == "ln_before" else FILE_CASES[case]
    if safe and A.resolve_config(config).ln_before:
        pytest.skip("adapters 1.3.0 cannot save ln_before adapters as safetensors (see the crash test)")
    model, hf = pair(lib, {})
    hf.add_adapter("a", config=lib_config(lib, config))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # adapters' own init, perturbed
        for n, p in hf.named_parameters():
            if ".adapters." in n:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    hf.save_adapter(str(tmp_path), "a", use_safetensors=safe)
    assert A.load_adapter(model, tmp_path, set_active=True) == "a"
    hf.set_active_adapters("a")
    batch = random_batch(99)
    assert_same_logits(model, hf, batch, "logits: adapters file in minis2s")


def test_round_trip_into_another_dtype(tmp_path):
    torch.manual_seed(0)
    model = EncoderDecoderModel(tiny_config()).eval()
    A.add_adapter(model, "a", CASES["everything"], set_active=True)
    perturb(model, "a", seed=3)
    A.save_adapter(model, tmp_path, "a")
    twin = EncoderDecoderModel(model.config).eval()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if ".adapters." not in k})
    twin.to(torch.float64)
    A.load_adapter(twin, tmp_path, load_as="b", set_active=True)
    with pytest.raises(ValueError, match="already has an adapter named 'b': pass load_as"):
        A.load_adapter(twin, tmp_path, load_as="b")
    for k, p in A.adapter_parameters(twin, "b").items():
        assert p.dtype == torch.float64
        assert torch.equal(p.float(), A.adapter_parameters(model, "a")[k.replace(".b.", ".a.")])


def test_load_errors_list_every_bad_key(tmp_path):
    torch.manual_seed(0)
    model = EncoderDecoderModel(tiny_config())
    A.add_adapter(model, "a", DoubleSeqBnConfig(reduction_factor=4))
    A.save_adapter(model, tmp_path, "a")
    weights = load_file(str(tmp_path / "adapter.safetensors"))
    first = min(weights)
    bad = dict(weights)
    del bad[first]
    bad["encoder.encoder.layer.0.output.adapters.a.extra.weight"] = torch.zeros(2)
    save_file(bad, str(tmp_path / "adapter.safetensors"))
    target = EncoderDecoderModel(tiny_config())
    with pytest.raises(ValueError, match=r"missing 1 tensor\(s\): " + first.replace(".", r"\.")
                       + r".*unexpected 1 tensor\(s\): encoder\.encoder\.layer\.0\.output\.adapters\.a\.extra"):
        A.load_adapter(target, tmp_path)
    assert getattr(target, "adapters_config", {}) == {}  # nothing half-loaded
    assert all(len(layer.adapters) == 0 for layer in [*target.encoder.layers, *target.decoder.layers])
    # Mis-shaped: the config says another bottleneck size than the tensors.
    save_file(weights, str(tmp_path / "adapter.safetensors"))
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    meta["config"]["reduction_factor"] = 2
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"mis-shaped tensor\(s\).* has \(6, 24\), model expects \(12, 24\)"):
        A.load_adapter(target, tmp_path)
    # Features minis2s does not implement are refused by name.
    meta["config"]["phm_layer"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="phm_layer=True is not implemented"):
        A.load_adapter(target, tmp_path)


# -- sizes on bert-base bert2bert ----------------------------------------------------------------------------------

def test_bert_base_parameter_counts(lib):
    transformers = require("transformers")
    enc = BertConfig(attn_implementation="eager")  # bert-base-uncased's shape
    config = EncoderDecoderConfig(enc, decoder_config_from(enc), decoder_start_token_id=101, pad_token_id=0,
                                  eos_token_id=102)
    with torch.device("meta"):  # shapes only: instant, no memory
        model = EncoderDecoderModel(config)
        hf_cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
            transformers.BertConfig(**enc.to_hf_dict()), transformers.BertConfig(**config.decoder.to_hf_dict()))
        hf = transformers.EncoderDecoderModel(config=hf_cfg)
        lib.init(hf)
        for name in A.PRESETS:
            A.add_adapter(model, name, name)
            hf.add_adapter(name, config=name)
    ours = {r["name"]: r for r in A.adapter_summary(model, as_dict=True)}
    theirs = {r["name"]: r for r in hf.adapter_summary(as_dict=True)}
    assert (ours["seq_bn"]["#modules"], ours["seq_bn"]["#param"]) == (24, 1_789_056)
    assert (ours["double_seq_bn"]["#modules"], ours["double_seq_bn"]["#param"]) == (60, 4_472_640)
    assert ours["Full model"]["#param"] == 247_363_386
    for name in [*A.PRESETS, "Full model"]:
        assert ours[name]["#param"] == theirs[name]["#param"], name
        assert ours[name]["%param"] == pytest.approx(theirs[name]["%param"]), name
    print("\n" + A.adapter_summary(model))
