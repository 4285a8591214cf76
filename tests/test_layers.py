"""The package's layers: the decoder (bitstream, render, decoder.py and the shared helpers) at
the bottom, the encoder above it, the applications (inpainting, CLI, Pillow plugin, benchmark)
on top. No module imports from a layer above its own, at module level or inside a function
(CONTRIBUTING.md, "Layers")."""
import ast
from pathlib import Path

import gscodec

PACKAGE = Path(gscodec.__file__).parent
DECODER = ("gscodec.bitstream", "gscodec.render", "gscodec.decoder", "gscodec.errors",
           "gscodec.imageio", "gscodec.metrics")
ENCODER = ("gscodec.encoder",)
APPLICATIONS = ("gscodec.inpainting", "gscodec.cli", "gscodec.pil_plugin", "gscodec.benchmark",
                "gscodec.__main__")


def layer(module: str) -> int | None:
    for rank, prefixes in enumerate((DECODER, ENCODER, APPLICATIONS)):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str):
    """Absolute names of the gscodec modules that a file imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("gscodec"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("gscodec"):
                yield target
                # `from . import entropy` names modules too
                yield from (f"{target}.{a.name}" for a in node.names)


def test_every_module_has_a_layer():
    names = [module_name(p) for p in PACKAGE.rglob("*.py")]
    assert [n for n in names if n != "gscodec" and layer(n) is None] == []


def test_no_import_runs_upward():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name == "gscodec":     # the public facade: it names every layer's entry points
            continue
        for target in imported(path, name):
            if layer(target) is not None and layer(target) > layer(name):
                upward.append(f"{name} imports {target}")
    assert upward == []
