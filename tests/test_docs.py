"""Docs that cannot go stale: every command and code block of README.md and docs/**/*.md is checked.

A `labkit ...` line is parsed by labkit's own argparse parser (`--help` ones run); `pytest`,
`papermill`, `pip`, `conda`, `jupyter`, `cd` and `bash` lines are checked against the files they
name; any other line is quoted verbatim from a file the tests or CI run (tests/, .ci/run, the
notebooks). A ```text block is docs/index.md's module map or quoted likewise. Links and
repository paths in backticks must exist (but those in hidden folders, such as a venv a script
makes). New pages are covered as they come.
"""
import contextlib
import glob
import io
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from labkit.cli import parser

from module_map import INDEX, committed, diagram

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHELL = {"", "bash", "sh", "shell", "console"}
REPO_PATH = re.compile(r"(labkit|notebooks|tests|docs|\.ci)/[\w./*-]*")


def sources() -> set:
    """The lines of the files tests and CI run: tests/*.py (but this one), .ci/run and the
    notebooks' cells."""
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "tests").glob("*.py"))
             if p.name != "test_docs.py"]
    texts.append((ROOT / ".ci" / "run").read_text())
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        texts += ["".join(c["source"]) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]]
    return {line.strip() for text in texts for line in text.splitlines()}


SOURCES = sources()  # every line of them, stripped


def blocks(text: str):
    """(language, code) of each fenced block, then of each indented block (4 spaces, after a blank line)."""
    for lang, code in FENCED.findall(text):
        yield lang, code
    rest = FENCED.sub("", text)
    for code in re.findall(r"(?:^|\n\n)((?: {4}.*\n?)+)", rest):
        yield "", "\n".join(line[4:] for line in code.splitlines())


def without_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).strip()


def quoted(line: str) -> bool:
    """Whether `line` is a whole line of a file the tests or CI run."""
    return line in SOURCES


def parameters(notebook: Path) -> set:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    return set(re.findall(r"^(\w+)\s*(?::[^=]*)?=", "".join(cell["source"]), re.M))


def check_labkit(args: list, partial: bool = False) -> None:
    """Parse a `labkit` command line with the CLI's parser; `--help` runs. `partial`: prose
    names a command and some options, not a whole command line."""
    if partial:
        sub = parser()._subparsers._group_actions[0].choices
        assert args[0] in sub or args[0] in ("-h", "--help"), f"no command labkit {args[0]}"
        known = {s for a in sub.get(args[0], parser())._actions for s in a.option_strings}
        unknown = [a.split("=")[0] for a in args if a.startswith("-") and a.split("=")[0] not in known]
        assert not unknown, f"labkit {args[0]} has no option {unknown}"
        return
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as ended:
        parser().parse_args(args)
        raise SystemExit(0 if "--help" not in args and "-h" not in args else 1)
    assert ended.value.code == 0, err.getvalue()
    assert "--help" not in args or "usage: labkit" in out.getvalue()


def check_pytest(args: list, cwd: Path) -> None:
    files, expr = [], None
    for i, a in enumerate(args):
        if i and args[i - 1] == "-k":
            expr = a
        elif not a.startswith("-"):
            files.append(cwd / a.split("::")[0])
    assert all(f.exists() for f in files), f"pytest: {files} missing"
    if expr:
        names = re.findall(r"def (test_\w+)", "".join(f.read_text() for f in files or (ROOT / "tests").glob("*.py")))
        for word in set(re.findall(r"\w+", expr)) - {"and", "or", "not"}:
            assert any(word in n for n in names), f"pytest -k {expr}: no test named with {word}"


def check_command(part: str, cwd: Path) -> Path:
    """Check one command (no &&); returns the working directory after it."""
    args = shlex.split(re.sub(r"^(\w+=\S+\s+)+", "", part))
    prog, rest = args[0], args[1:]
    if prog == "labkit":
        check_labkit(rest)
    elif prog == "cd":
        cwd = cwd / rest[0]
        assert cwd.is_dir(), f"cd {rest[0]}: no such folder"
    elif prog == "pytest":
        check_pytest(rest, cwd)
    elif prog == "papermill":
        assert (cwd / rest[0]).is_file(), f"papermill: {rest[0]} missing"
        names = [rest[i + 1] for i, a in enumerate(rest) if a in ("-p", "--parameters")]
        assert set(names) <= parameters(cwd / rest[0]), f"{rest[0]} has no parameter among {names}"
    elif prog == "pip":
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        extras = re.fullmatch(r"\.(?:\[([\w,]+)\])?", rest[-1]).group(1) or ""
        assert rest[0] == "install" and set(extras.split(",")) - {""} <= set(project["optional-dependencies"])
    elif prog == "conda":
        name = yaml.safe_load((ROOT / "environment.yml").read_text())["name"]
        assert rest in (["env", "create", "-f", "environment.yml"], ["activate", name]), part
    elif prog == "jupyter":
        assert rest[0] in ("lab", "nbconvert"), part
        assert all(glob.glob(str(cwd / a)) for a in rest[1:] if not a.startswith("-")), part
    elif prog == "bash":
        assert (cwd / rest[0]).is_file(), part
    else:
        assert False, f"{part!r}: not a command tests/test_docs.py checks, nor quoted from tests/, .ci/run or a notebook"
    return cwd


def check_line(line: str) -> None:
    line = without_comment(line)
    if not line or quoted(line) or line.startswith("#"):
        return
    cwd = ROOT
    for part in line.split(" && "):
        if part in ("python3 -m venv .venv", ". .venv/bin/activate"):
            continue
        cwd = check_command(part, cwd)


def page_ids():
    return [str(p.relative_to(ROOT)) for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_code_block_is_checked(page):
    text = page.read_text(encoding="utf-8")
    for lang, code in blocks(text):
        if lang in SHELL:
            for line in code.splitlines():
                check_line(line)
        elif lang == "text" and page == INDEX and code == committed(text):
            continue  # the module map: tests/test_imports.py
        elif lang == "log" and ROOT / "docs" / "experiments" in page.parents:
            continue  # an experiment's record, kept as it was measured, beside its command
        elif lang in ("python", "text"):
            lines = [without_comment(x) for x in code.splitlines() if without_comment(x)]
            missing = [x for x in lines if not quoted(x)]
            assert not missing, f"{page.name}: not quoted from a file the tests run: {missing}"
        else:
            assert False, f"{page.name}: a ```{lang} block; use bash, python or text (log: docs/experiments/ only)"


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_commands_paths_and_links_in_the_prose_exist(page):
    text = FENCED.sub("", page.read_text(encoding="utf-8"))
    for span in re.findall(r"`([^`\n]+)`", text):
        if span.startswith("labkit "):
            check_labkit(shlex.split(without_comment(span))[1:], partial=True)
        elif span.startswith(("pytest ", "papermill ")):
            check_command(span, ROOT)
        elif REPO_PATH.fullmatch(span) and not any(p.startswith(".") for p in Path(span).parts[1:]):
            assert glob.glob(str(ROOT / span)), f"{page.name}: {span} does not exist"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"\w+://", target):
            assert (page.parent / target).exists(), f"{page.name}: link to {target}, which does not exist"


def test_the_front_page_is_short_and_design_names_every_module():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    modules = {p.name for p in (ROOT / "labkit").glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not [m for m in sorted(modules) if f"`labkit/{m}`" not in design]


def test_the_module_map_is_what_the_code_imports():
    assert committed(INDEX.read_text(encoding="utf-8")) == diagram(), \
        "docs/index.md's map is stale: run `python tests/module_map.py --write`"


def test_a_stale_command_fails():
    with pytest.raises(AssertionError):
        check_line("labkit prune MODEL VALID_H5 --no-such-option")
    with pytest.raises(AssertionError):
        check_line("papermill notebooks/02_prune.ipynb out.ipynb -p no_such_parameter 4")
    with pytest.raises(AssertionError):
        check_line("rm -rf data")
    check_line("labkit prune MODEL VALID_H5 --drops 2 4 10")
