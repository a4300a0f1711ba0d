"""The package's layout is the architecture: imports run one way, from the core outwards, and the core stays small.

    core        config, embeddings, attention, feedforward, layers, model     the model a learner reads, <= 700 lines
    adapters    adapters                                                      the three ideas on the core's hooks, <= 150
    engine      engine, generation                                            KV cache and decoding, on the core's layers
    compat      files, checkpoint, convert, tokenizer, adapters_compat        files and other libraries' formats
    api         pretrained, __init__                                          EncoderDecoderModel: the user's class
    tools       train, data, metrics, experiment, generate_cli, compare, __main__

A module may import only from its own layer or the layers above it in this list; no package module imports another
inside a function (the usual way to dodge an import cycle); the core imports nothing but torch from outside.

Run: python -m pytest tests/test_layout.py -q
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minis2s"
LAYERS = [
    ("core", {"config", "embeddings", "attention", "feedforward", "layers", "model"}),
    ("adapters", {"adapters"}),
    ("engine", {"engine", "generation"}),
    ("compat", {"files", "checkpoint", "convert", "tokenizer", "adapters_compat"}),
    ("api", {"pretrained", "__init__"}),
    ("tools", {"train", "data", "metrics", "experiment", "generate_cli", "compare", "__main__"}),
]
LAYER_OF = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}
CORE_LIMIT, ADAPTERS_LIMIT = 700, 150
# The one function-level import allowed: matplotlib, an optional extra that would slow every command's start-up.
LAZY_OK = {("train", "matplotlib")}


def package_imports(module: str) -> list[tuple[str, bool]]:
    """(imported package module or external top-level name, inside a function?) for every import of `module`."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y / from . import y
                names = [node.module] if node.module else ["__init__"]
            else:
                names = [node.module.split(".")[0]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        else:
            continue
        found += [(n, id(node) in inside) for n in names]
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYER_OF), f"unplaced: {modules - set(LAYER_OF)}, gone: {set(LAYER_OF) - modules}"


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_imports_run_one_way(module):
    for name, lazy in package_imports(module):
        if name in LAYER_OF:
            assert LAYER_OF[name] <= LAYER_OF[module], (
                f"{module} ({LAYERS[LAYER_OF[module]][0]}) imports {name} ({LAYERS[LAYER_OF[name]][0]}), a later layer")
        assert not lazy or (module, name) in LAZY_OK, f"{module} imports {name} inside a function"
        if LAYER_OF[module] == 0 and name not in LAYER_OF:
            assert name in ("torch", "__future__", "dataclasses", "math"), f"the core module {module} imports {name}"


def closure(module: str) -> set[str]:
    """`module` and every package module it imports, directly or not."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [n for n, _ in package_imports(m) if n in LAYER_OF]
    return seen


def lines(modules) -> int:
    return sum(len((PACKAGE / f"{m}.py").read_text(encoding="utf-8").splitlines()) for m in modules)


def test_the_core_is_read_in_one_sitting():
    core = closure("model")
    assert core == LAYERS[0][1], f"model.py's closure is {sorted(core)}"
    assert lines(core) <= CORE_LIMIT, f"the core is {lines(core)} lines, over {CORE_LIMIT}"
    assert closure("adapters") == {"adapters", "feedforward", "config"}
    assert lines(["adapters"]) <= ADAPTERS_LIMIT, f"adapters.py is {lines(['adapters'])} lines"
