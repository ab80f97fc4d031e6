"""`labkit course DIR`: a ready nbgrader course folder, to grade the notebooks with nbgrader's cycle.

DIR gets `nbgrader_config.py` (course id, assignment, the autograder's time limit per cell, and
LABKIT_HOME: the lab folder the notebooks use when nbgrader runs them, DIR/lab), the reference
notebooks in `source/<assignment>/` and a README with the instructor's commands in order. With
`dataset="lab"` the notebooks run on the course's files, linked into DIR/lab from `data`; with the
demo, the first notebook nbgrader runs builds the demo lab in DIR/lab. The reference notebooks
and the course's files are only read.
"""
from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from . import data
from .colab import INSTRUCTOR_HINT, check_install_source
from .errors import LabError
from .files import atomic_path
from .notebook import COURSE_FILES, check_course_files
from .student import INSTRUCTOR_TAG, set_install_source

COURSE_ID = "labkit"
ASSIGNMENT = "lab3"
TIMEOUT = {"demo": 600, "lab": 3600}  # seconds one cell may run in the autograder; 05 trains on the course's data
LAB = "lab"  # DIR/lab: LABKIT_HOME of the autograder's kernels

CONFIG = '''\
"""nbgrader's settings for this course, written by `labkit course`."""
import os

from nbconvert.preprocessors import TagRemovePreprocessor
from nbgrader.converters import GenerateAssignment

c = get_config()  # noqa: F821 (nbgrader defines it)
c.CourseDirectory.course_id = {course!r}
# the assignment, {assignment!r}, is source/{assignment}/; nbgrader's commands take its name as their
# argument (nbgrader refuses it both here and there)
# the notebooks run on the {dataset} lab in ./{lab}: LABKIT_HOME reaches every kernel nbgrader starts
os.environ["LABKIT_HOME"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), {lab!r})
c.Execute.timeout = {timeout}  # seconds per cell; a cell that runs longer fails (CellTimeoutError)
# cells tagged {tag!r} (model answers) stay out of the release
c.GenerateAssignment.preprocessors = [TagRemovePreprocessor,
                                      *GenerateAssignment.class_traits()["preprocessors"].default()]
c.TagRemovePreprocessor.enabled = True
c.TagRemovePreprocessor.remove_cell_tags = {{{tag!r}}}
'''

README = '''\
# {assignment}: grading the lab's notebooks with nbgrader

{intro}

1. Make the student version: `release/{assignment}/`, every task `raise NotImplementedError()`,
   the check cells locked (nbgrader's checksums), no solution and no hidden test.

       nbgrader generate_assignment {assignment}

2. Hand out `release/{assignment}/` (or `nbgrader release_assignment {assignment}` with an
   exchange). Put each student's notebooks in `submitted/STUDENT/{assignment}/` (or
   `nbgrader collect {assignment}`): for a hand-in folder HANDIN,

       mkdir -p submitted/STUDENT/{assignment} && cp HANDIN/*.ipynb submitted/STUDENT/{assignment}/

3. Run every submission and store the scores in gradebook.db. Before running a notebook,
   nbgrader puts back the source of every locked cell, hidden tests included, so a check cell a
   student edited or emptied still grades; it logs "Attribute 'checksum' for cell ... has
   changed!" for each check cell, as the student's copies lack the hidden tests.

       nbgrader autograde {assignment}

4. One HTML page per notebook and student, with each check's verdict and hint, in
   `feedback/STUDENT/{assignment}/`:

       nbgrader generate_feedback {assignment}

5. The scores, one row per student (score, max_score), in grades.csv:

       nbgrader export
'''


def notebooks(names: list[str] | None = None, source: Path | None = None) -> list[Path]:
    """The lab's notebooks (NN_*.ipynb in `source`, default: the project's notebooks/, else those of
    the checkout labkit is installed from), or those whose name starts with one of `names` ("02")."""
    if source is None:
        here = data.project_root() / "notebooks"
        source = here if here.is_dir() else Path(__file__).resolve().parents[1] / "notebooks"
    found = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise LabError(f"{source}: no notebooks here; run from a labkit checkout")
    if not names:
        return found
    unknown = [n for n in names if not any(p.name.startswith(n) for p in found)]
    if unknown:
        raise LabError(f"--notebooks {' '.join(unknown)}: no such notebook; choose from "
                       f"{', '.join(p.stem for p in found)}")
    return [p for p in found if any(p.name.startswith(n) for n in names)]


def _with_dataset(nb, dataset: str, path: Path):
    """The notebook with `dataset` set in its parameters cell (the autograder passes no parameters)."""
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    line = re.compile(r'^dataset: str = "\w+"', re.M)
    if cell is None or not line.search(cell.source):
        raise LabError(f"{path}: no `dataset: str = ...` line in a cell tagged parameters")
    cell.source = line.sub(f'dataset: str = "{dataset}"', cell.source)
    return nb


def write_course(out_dir: Path | str, dataset: str = "demo", assignment: str = ASSIGNMENT,
                 names: list[str] | None = None, course_files: Path | str | None = None,
                 install: str | None = None) -> list[Path]:
    """Write the course folder `out_dir` (new or empty), all of it or nothing; return its files.

    `course_files` (dataset "lab"): the folder holding data/cl, data/bd and models/bd_net.h5
    (default: the project's); they are linked into out_dir/lab, never copied or changed.
    `install`: what the notebooks' setup cells install in Colab (as `labkit student --install`).
    """
    import nbformat

    try:
        import nbgrader  # noqa: F401 (the course is graded with it)
    except ImportError:
        raise LabError(f"the course is graded with nbgrader, which is not installed: {INSTRUCTOR_HINT}") from None
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabError(f"{out}: the course goes to a new or empty folder; choose another")
    if dataset not in TIMEOUT:
        raise LabError(f"dataset {dataset!r}: use 'demo' (built offline) or 'lab' (the course's files)")
    if install is not None:
        check_install_source(install)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", assignment):
        raise LabError(f"assignment {assignment!r}: use letters, digits, '-' and '_' (it names folders)")
    paths = notebooks(names)
    sources = []
    if dataset == "lab":
        given = data.lab("lab", Path(course_files).resolve() if course_files else None)
        check_course_files(given)
        sources = [given.root / rel for rel in COURSE_FILES]
    books = {p.name: _with_dataset(nbformat.read(p, as_version=4), dataset, p) for p in paths}
    for name, nb in books.items():
        if install is not None:
            set_install_source(nb, install, name)
    where = ("demo lab, built in lab/ by the first notebook nbgrader runs" if dataset == "demo" else
             f"course's files in {given.root}, linked into lab/")
    if out.exists():
        out.rmdir()  # empty, checked above
    with atomic_path(out) as tmp:  # the whole folder is the temporary: a killed run's is swept
        tmp.unlink()
        (tmp / "source" / assignment).mkdir(parents=True)
        for name, nb in books.items():
            nbformat.write(nb, tmp / "source" / assignment / name)
        for src, rel in zip(sources, COURSE_FILES):
            (tmp / LAB / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, tmp / LAB / rel)
        (tmp / "nbgrader_config.py").write_text(CONFIG.format(
            course=COURSE_ID, assignment=assignment, dataset=dataset, lab=LAB,
            timeout=TIMEOUT[dataset], tag=INSTRUCTOR_TAG))
        intro = (f"Written by `labkit course`. When nbgrader runs the notebooks ({', '.join(books)}), "
                 f"they use the {where} (`LABKIT_HOME`, set in `nbgrader_config.py`). Each task's "
                 "check cell is worth its points; its hidden test fails when the check's verdict is "
                 "not correct. Run every command in this folder.")
        (tmp / "README.md").write_text(README.format(assignment=assignment, intro=textwrap.fill(intro, 96)))
        written = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file() or p.is_symlink())
    return [out / p for p in written]
