"""`labkit student`: the student edition, derived with nbgrader; no solution left; it stops at Task 1."""
import hashlib
import os
import subprocess
import sys

import nbformat
import pytest

from labkit import cli
from labkit.colab import DISTRIBUTION, INSTALL_SOURCE, setup_line
from labkit.errors import LabError
from labkit.student import write_student_edition

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
           "BEGIN MARK SCHEME", "model answer")
COURSE_SOURCE = "git+https://git.example.edu/course/labkit-fork@v1"  # an instructor's fork


def solution_lines(nb):
    """The lines inside the solution regions of a reference notebook."""
    lines, inside = [], False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if "BEGIN SOLUTION" in line or "END SOLUTION" in line:
                inside = "BEGIN" in line
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def digests():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in NOTEBOOKS}


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    pytest.importorskip("nbgrader")
    before = digests()
    out = tmp_path_factory.mktemp("edition") / "student"
    assert cli.main(["student", str(out), "--install", COURSE_SOURCE]) == 0
    assert digests() == before  # notebooks/ is only read
    return out


def test_no_solution_survives(edition):
    assert sorted(p.name for p in edition.iterdir()) == [p.name for p in NOTEBOOKS]
    tasks = 0
    for path in NOTEBOOKS:
        reference = nbformat.read(path, as_version=4)
        student = nbformat.read(edition / path.name, as_version=4)
        text = "\n".join(c.source for c in student.cells)
        assert not [m for m in MARKERS if m.lower() in text.lower()], path.name
        left = {line.strip() for line in text.splitlines()}
        assert not [line for line in solution_lines(reference) if line in left], path.name
        assert not any(c.get("outputs") for c in student.cells)
        assert not any("instructor" in c.metadata.get("tags", []) for c in student.cells)
        tasks += text.count("raise NotImplementedError()")
        assert text.count("raise NotImplementedError()") == len(
            [c for c in reference.cells if c.metadata.get("nbgrader", {}).get("solution")])
    assert tasks >= 3


def test_student_02_stops_at_its_first_task(edition, demo_lab):
    proc = subprocess.run([sys.executable, "-m", "papermill", "--kernel", "python3", "--no-progress-bar",
                           "02_prune.ipynb", "run.ipynb"], cwd=edition, capture_output=True, text=True,
                          env={**os.environ, "LABKIT_HOME": str(ROOT)})
    assert proc.returncode != 0
    ran = nbformat.read(edition / "run.ipynb", as_version=4)
    failed = [c for c in ran.cells if any(o.output_type == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1
    error = next(o for o in failed[0].outputs if o.output_type == "error")
    assert error.ename == "NotImplementedError", error.evalue
    assert failed[0].metadata["nbgrader"]["grade_id"] == "pruning_order"


def test_setup_cells_install_the_courses_source(edition):
    for path in NOTEBOOKS:
        setup = nbformat.read(edition / path.name, as_version=4).cells[1].source
        assert setup_line(COURSE_SOURCE) in setup and setup_line(INSTALL_SOURCE) not in setup, path.name


@pytest.mark.parametrize("source", ["", "a b.whl", 'x"; rm -rf ~; "', "{os.system('id')}"])
def test_a_bad_install_source_writes_nothing(tmp_path, capsys, source):
    assert cli.main(["student", str(tmp_path / "out"), "--install", source]) == 2
    assert "install source" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_out_dir_must_be_new_or_empty(tmp_path):
    pytest.importorskip("nbgrader")
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(LabError, match="new or empty folder"):
        write_student_edition(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_without_nbgrader_it_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nbgrader.preprocessors", None)  # import fails as if absent
    assert cli.main(["student", str(tmp_path / "out")]) == 2
    assert f"pip install '{DISTRIBUTION}[instructor]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
