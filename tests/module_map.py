"""labkit's modules in layers, read from their imports (at the top and inside functions).

A module's layer is one above the highest module it imports, so every arrow points down.
`python tests/module_map.py` prints the map; `--write` puts it into docs/index.md, where
tests/test_imports.py checks it is still what the code says.
"""
import ast
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "labkit"
INDEX = ROOT / "docs" / "index.md"
FENCE = "```text\n"  # the map is the first block of this kind in docs/index.md


def imports(package: Path = PACKAGE) -> dict:
    """{module: set of labkit modules it imports}, for every labkit/*.py but __init__ and __main__."""
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}
    graph = {}
    for name in sorted(modules):
        found = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import y, from . import x
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("labkit.")}
        graph[name] = found & modules - {name}
    return graph


def cycles(graph: dict) -> list:
    """Each import circle as a list of modules [a, b, ..., a]; empty when every arrow points down."""
    found, state = [], {}  # state: 1 while on the current path, 2 when done

    def visit(name, path):
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def layers(graph: dict) -> dict:
    """{module: layer}: 0 for a module importing no labkit module, else one above its highest import."""
    depth: dict = {}

    def layer(name):
        if name not in depth:
            depth[name] = 1 + max((layer(d) for d in graph[name]), default=-1)
        return depth[name]

    for name in graph:
        layer(name)
    return depth


def diagram(graph: dict | None = None) -> str:
    """The map as text: the top layer first, each module with the modules it imports."""
    graph = imports() if graph is None else graph
    depth = layers(graph)
    lines = []
    for level in range(max(depth.values()), -1, -1):
        lines.append(f"layer {level}")
        for name in sorted(n for n in graph if depth[n] == level):
            uses = ", ".join(sorted(graph[name], key=lambda d: (-depth[d], d)))
            lines += textwrap.wrap(f"{name:<10} {'-> ' + uses if uses else ''}", 96,
                                   initial_indent="  ", subsequent_indent=" " * 16)
    return "\n".join(lines) + "\n"


def committed(text: str) -> str:
    """The map as docs/index.md holds it: the first ```text block."""
    start = text.index(FENCE) + len(FENCE)
    return text[start:text.index("```", start)]


if __name__ == "__main__":
    if cycles(imports()):
        sys.exit(f"import circles: {cycles(imports())}")
    if sys.argv[1:] == ["--write"]:
        text = INDEX.read_text(encoding="utf-8")
        old = committed(text)
        INDEX.write_text(text.replace(FENCE + old, FENCE + diagram(), 1), encoding="utf-8")
    else:
        print(diagram(), end="")
