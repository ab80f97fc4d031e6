"""`labkit student OUT_DIR`: the student edition of the notebooks, derived with nbgrader's own preprocessors.

In the reference notebooks the code a student writes sits between `### BEGIN SOLUTION` and
`### END SOLUTION` in nbgrader solution cells, and each check cell asserts its verdict between
`### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`. The student edition replaces each solution
region with `# YOUR CODE HERE` + `raise NotImplementedError()` (the comment above it says what to
write), drops hidden tests and mark schemes, clears outputs and removes cells tagged `instructor`
(model answers). `install` writes the course's install source into each Colab setup cell
(`notebook.INSTALL_SOURCE` is unset in the reference notebooks). The reference notebooks are only read.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .data import project_root
from .errors import LabError
from .colab import INSTALL_SOURCE, INSTRUCTOR_HINT, check_install_source, setup_line

INSTRUCTOR_TAG = "instructor"  # cells only the instructor's edition keeps


def preprocessors() -> list:
    """nbgrader's ClearSolutions, ClearHiddenTests, ClearMarkScheme, then nbconvert's output and tag removal."""
    try:
        from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, ClearSolutions
    except ImportError:
        raise LabError(f"the student edition is made with nbgrader, which is not installed: "
                       f"{INSTRUCTOR_HINT}") from None
    from nbconvert.preprocessors import ClearOutputPreprocessor, TagRemovePreprocessor

    return [ClearSolutions(), ClearHiddenTests(), ClearMarkScheme(), ClearOutputPreprocessor(),
            TagRemovePreprocessor(remove_cell_tags={INSTRUCTOR_TAG})]


def set_install_source(nb, install: str, name: str) -> None:
    """Make the notebook's Colab install cell (its second) install `install`."""
    setup = nb.cells[1]
    if setup_line(INSTALL_SOURCE) not in setup.source:
        raise LabError(f"{name}: its Colab install cell has no line `{setup_line(INSTALL_SOURCE).strip()}` "
                       "to set; restore it from the reference notebooks")
    setup.source = setup.source.replace(setup_line(INSTALL_SOURCE), setup_line(install))


def write_student_edition(out_dir: Path | str, source: Path | str | None = None,
                          install: str | None = None) -> list[Path]:
    """Write the student edition of every notebook in `source` (default: notebooks/) to `out_dir`.

    `out_dir` must not exist or be empty; it is filled only when every notebook converted.
    `install`: what the setup cells install in Colab (a git URL, a wheel URL, a Drive path).
    Returns the written paths.
    """
    import nbformat

    if install is not None:
        check_install_source(install)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabError(f"{out}: the student edition goes to a new or empty folder; choose another")
    source = Path(source) if source else project_root() / "notebooks"
    paths = sorted(source.glob("*.ipynb"))
    if not paths:
        raise LabError(f"{source}: no notebooks here; run from a labkit checkout")
    steps = preprocessors()
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            nb, resources = nbformat.read(path, as_version=4), {}
            for step in steps:
                nb, resources = step.preprocess(nb, resources)
            if install is not None:
                set_install_source(nb, install, path.name)
            nbformat.write(nb, Path(tmp) / path.name)
        out.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy2(Path(tmp) / p.name, out / p.name)) for p in paths]
