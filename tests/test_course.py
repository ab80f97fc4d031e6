"""`labkit course`: an nbgrader course folder; its README's cycle run for real (nbgrader, its SQLite
gradebook, real execution): a right submission gets every point, one mistake costs one task, an
edited locked cell changes nothing, and the feedback names the mistake without the solution."""
import csv
import html
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit import cli
from labkit.colab import INSTRUCTOR_HINT, setup_line
from labkit.course import TIMEOUT
from labkit.notebook import COURSE_FILES

from conftest import ROOT
from test_student import MARKERS, digests, solution_lines

pytest.importorskip("nbgrader")
NBGRADER = Path(sys.executable).parent / "nbgrader"
STEP = re.compile(r"^ {7}(\S.*)$", re.M)  # a command of the course README (an indented block)
DOC = ROOT / "docs" / "nbgrader-course.md"
CYCLE = """\
nbgrader generate_assignment lab3
mkdir -p submitted/STUDENT/lab3 && cp HANDIN/*.ipynb submitted/STUDENT/lab3/
nbgrader autograde lab3
nbgrader generate_feedback lab3
nbgrader export
""".splitlines()  # the course README's commands, in order; docs/nbgrader-course.md quotes them


def doc_commands() -> list[str]:
    """The lines of the code blocks of docs/nbgrader-course.md."""
    blocks = re.findall(r"^```bash\n(.*?)^```", DOC.read_text(), re.M | re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def readme_commands(course: Path) -> list[str]:
    return STEP.findall((course / "README.md").read_text())


def shell(command: str, cwd: Path) -> str:
    """Run one README command as an instructor would (the venv's nbgrader first on the PATH)."""
    env = {**os.environ, "PATH": f"{NBGRADER.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}\n{out[-3000:]}"
    assert "ERROR" not in out, f"{command}\n{out[-3000:]}"  # e.g. a config file nbgrader could not load
    return out


def answers(reference) -> dict:
    """grade_id -> the reference answer of each task: its solution cell without nbgrader's markers."""
    return {c.metadata.nbgrader["grade_id"]: "\n".join(
        line for line in c.source.splitlines() if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
        for c in reference.cells if c.metadata.get("nbgrader", {}).get("solution")}


def hand_in(release: Path, source: Path, folder: Path, edits=None) -> Path:
    """A student's hand-in: the release with every task filled in with the reference answer,
    then `edits` {grade_id: source -> source} applied."""
    folder.mkdir(parents=True)
    for path in release.glob("*.ipynb"):
        nb, right = nbformat.read(path, as_version=4), answers(nbformat.read(source / path.name, as_version=4))
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            cell.source = right.get(grade_id, cell.source)
            cell.source = (edits or {}).get(grade_id, lambda s: s)(cell.source)
        nbformat.write(nb, folder / path.name)
    return folder


def make(out: Path, *options) -> Path:
    assert cli.main(["course", str(out), *map(str, options)]) == 0
    return out


def run_doc_command(command: str) -> None:
    """Run a `labkit course` command that the docs page shows, exactly as it shows it."""
    assert command in doc_commands()
    assert cli.main(shlex.split(command)[1:]) == 0


def test_release_of_every_notebook(tmp_path, monkeypatch):
    before = digests()
    monkeypatch.chdir(tmp_path)
    run_doc_command("labkit course course")
    course = tmp_path / "course"
    assert digests() == before  # notebooks/ is only read
    assert readme_commands(course) == CYCLE
    assert doc_commands() == ["labkit course course", *CYCLE, "labkit course ../course-lab --dataset lab"]
    shell(CYCLE[0], course)  # nbgrader generate_assignment lab3
    reference = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(p.name for p in (course / "release" / "lab3").iterdir()) == reference
    for name in reference:
        source = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        release = nbformat.read(course / "release" / "lab3" / name, as_version=4)
        text = "\n".join(c.source for c in release.cells)
        assert not [m for m in MARKERS if m.lower() in text.lower()], name
        assert not {line.strip() for line in text.splitlines()} & set(solution_lines(source)), name
        tasks = [c for c in release.cells if c.metadata.get("nbgrader", {}).get("solution")]
        assert all("raise NotImplementedError()" in c.source for c in tasks), name
        checks = [c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert len(tasks) == len(checks)  # one check cell per task, each worth its points
        for check in checks:
            assert check.metadata.nbgrader["points"] == 1 and check.metadata.nbgrader["locked"]  # as the docs say
            hidden = check.source.split("### BEGIN HIDDEN TESTS")[1]  # the grader calls the check itself
            assert re.search(r"^verdict = check\.\w+\(", hidden, re.M) and "assert verdict.ok, verdict" in hidden
        locked = [c for c in release.cells if c.metadata.get("nbgrader", {}).get("locked")]
        assert len(locked) == len(checks) and all(c.metadata.nbgrader.get("checksum") for c in locked)
        assert not any("instructor" in c.metadata.get("tags", []) for c in release.cells), name


def test_refusals_leave_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("keep me")
    assert cli.main(["course", str(tmp_path / "old")]) == 2
    assert "new or empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["keep.txt"]
    for options, message in ((["--notebooks", "07"], "no such notebook"),
                             (["--assignment", "lab 3"], "letters, digits"),
                             (["--dataset", "lab", "--data", tmp_path / "none"], "5 of the course's 5 files missing"),
                             (["--data", tmp_path], "use it with --dataset lab"),
                             (["--install", "a b"], "one pip argument")):
        assert cli.main(["course", str(tmp_path / "new"), *map(str, options)]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["old"]  # no temporary folder left either
    monkeypatch.setitem(sys.modules, "nbgrader", None)  # import fails as if absent
    assert cli.main(["course", str(tmp_path / "new")]) == 2
    assert INSTRUCTOR_HINT in capsys.readouterr().err


def test_on_the_courses_files_they_are_linked_not_copied(tmp_path, monkeypatch):
    files = tmp_path / "labkit"  # the instructor's folder with the course's files
    for rel in COURSE_FILES:
        (files / rel).parent.mkdir(parents=True, exist_ok=True)
        (files / rel).write_bytes(rel.encode())
    monkeypatch.chdir(files)
    run_doc_command("labkit course ../course-lab --dataset lab")
    course = tmp_path / "course-lab"
    for rel in COURSE_FILES:
        assert (course / "lab" / rel).is_symlink() and (course / "lab" / rel).resolve() == (files / rel).resolve()
    assert (files / COURSE_FILES[-1]).read_bytes() == COURSE_FILES[-1].encode()  # only read
    nb = nbformat.read(course / "source" / "lab3" / "03_goodnet.ipynb", as_version=4)
    parameters = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'dataset: str = "lab"' in parameters
    config = (course / "nbgrader_config.py").read_text()
    assert f"c.Execute.timeout = {TIMEOUT['lab']}" in config and TIMEOUT["lab"] > TIMEOUT["demo"]
    # the options: which notebooks, the assignment's name
    other = make(tmp_path / "other", "--notebooks", "02", "03", "--assignment", "backdoor",
                 "--install", "git+https://example.org/labkit.git")
    setup = nbformat.read(other / "source" / "backdoor" / "02_prune.ipynb", as_version=4).cells[1].source
    assert setup_line("git+https://example.org/labkit.git") in setup
    assert sorted(p.name for p in (other / "source" / "backdoor").iterdir()) == ["02_prune.ipynb", "03_goodnet.ipynb"]
    assert "nbgrader autograde backdoor" in readme_commands(other)
    assert "source/backdoor/" in (other / "nbgrader_config.py").read_text()


def test_the_instructors_whole_cycle(tmp_path, monkeypatch):
    """From an empty folder: `labkit course`, then the README's commands in order, for four
    students: a right, b one mistake, c right with an edited check cell, d b's mistake behind one."""
    start = time.monotonic()
    monkeypatch.chdir(tmp_path)  # a new user's empty folder
    course = make(Path("course"), "--notebooks", "02").resolve()
    generate, place, *grade = readme_commands(course)
    assert [generate, place, *grade] == CYCLE
    shell(generate, course)
    release, source = course / "release" / "lab3", course / "source" / "lab3"
    decreasing = {"pruning_order": lambda s: s.replace("np.argsort(mean_act", "np.argsort(-mean_act")}
    edited = {"check_pruning_loop": lambda s: "assert True"}
    hidden = {**decreasing, "check_pruning_order": lambda s: "assert True"}  # b's mistake, its check edited
    for student, edits in (("a", None), ("b", decreasing), ("c", edited), ("d", hidden)):
        handin = hand_in(release, source, tmp_path / "handins" / student, edits)
        shell(place.replace("STUDENT", student).replace("HANDIN", str(handin)), course)
    out = [shell(command, course) for command in grade]  # autograde, generate_feedback, export
    seconds = time.monotonic() - start

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "labkit") as gb:
        scores = {s: {g.name: g.score for g in gb.find_submission_notebook("02_prune", "lab3", s).grades}
                  for s in "abcd"}
        total = {s: gb.find_submission("lab3", s).score for s in "abcd"}
        best = gb.find_assignment("lab3").max_score
    print(f"scores {total} of {best}; {seconds:.0f} s from `labkit course` to `nbgrader export`")
    assert best == 4 and total["a"] == best and all(v == 1 for v in scores["a"].values())
    # b's one mistake (decreasing order) costs the pruning-order task, not the loop along that order
    assert [name for name, v in scores["b"].items() if v == 0] == ["check_pruning_order"]
    assert total["b"] == best - 1
    # c's `assert True` was replaced by the locked cell's source, whose hidden test ran the check
    graded = nbformat.read(course / "autograded" / "c" / "lab3" / "02_prune.ipynb", as_version=4)
    cell = next(c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "check_pruning_loop")
    original = next(c for c in nbformat.read(source / "02_prune.ipynb", as_version=4).cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == "check_pruning_loop")
    assert cell.source == original.source and "assert True" not in cell.source
    assert "✓ correct: 6 steps along your channel_order" in "".join(o.get("text", "") for o in cell.outputs)
    assert "Attribute 'checksum' for cell check_pruning_loop has changed!" in out[0]  # as the README says
    assert (course / "lab" / "data" / "demo").is_dir()  # LABKIT_HOME of nbgrader's kernels: course/lab
    assert total["c"] == total["a"]  # c's answers are right: the edit neither helped nor hurt
    assert scores["d"] == scores["b"]  # an edited check cell does not hide a wrong answer
    # b's feedback: the check's one line, naming the mistake and its hint; not the answer
    page = html.unescape((course / "feedback" / "b" / "lab3" / "02_prune.html").read_text())
    assert "✗ this is decreasing order: the most active channels first. Hint: prune the channels " \
           "clean faces leave dormant first" in page
    assert 'np.argsort(mean_act, kind="stable")' not in page and "BEGIN SOLUTION" not in page
    with open(course / "grades.csv") as f:
        assert {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)} == total
