"""Refresh tests/colab/pins.txt: Colab's versions of every package installing labkit touches.

    python tests/colab/pins.py pip-freeze.txt

`pip-freeze.txt` is Colab's published runtime (the googlecolab/backend-info repository). The
packages are labkit's requirements (pyproject.toml) and theirs, walked with importlib.metadata in
the Python that runs this (best: the Colab check's own venv, tests/colab/.venv), plus pytest, which
the check runs there. Packages Colab does not ship are left out: installing labkit adds them.
"""
from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PINS = Path(__file__).with_name("pins.txt")
CHECK_TOOLS = ["pytest"]  # what the check runs in that venv besides labkit


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[Requirement]:
    """labkit's own requirements, read from pyproject.toml (labkit need not be installed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + CHECK_TOOLS]


def closure(roots: list[Requirement]) -> set[str]:
    """The canonical names of `roots` and everything they require here, extras and markers applied."""
    seen, todo = set(), [(r, "") for r in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        for wanted in ["", *req.extras]:
            if (canonical(req.name), wanted) not in seen:
                seen.add((canonical(req.name), wanted))
                try:
                    children = metadata.requires(req.name) or []
                except metadata.PackageNotFoundError:
                    children = []
                todo += [(Requirement(c), wanted) for c in children]
    return {name for name, _ in seen}


def freeze_lines(freeze: str) -> dict[str, str]:
    """`name==version` lines of a pip freeze, by canonical name (URL installs are skipped)."""
    return {canonical(line.split("==")[0]): line for line in freeze.splitlines() if "==" in line}


def main(freeze_path: str) -> None:
    colab = freeze_lines(Path(freeze_path).read_text())
    names = closure(requirements())
    PINS.write_text("# Colab's versions of the packages installing labkit touches "
                    "(tests/colab/pins.py writes this file)\n"
                    + "".join(colab[n] + "\n" for n in sorted(names & colab.keys())))
    print(f"{PINS}: {len(names & colab.keys())} pins; not in Colab (labkit adds them): "
          + ", ".join(sorted(names - colab.keys())))


if __name__ == "__main__":
    main(*sys.argv[1:])
