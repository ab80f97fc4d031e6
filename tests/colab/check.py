"""The Colab check: labkit installed into Colab's runtime as the setup cell does, then the lab run there.

    python tests/colab/check.py

1. a fresh venv, tests/colab/.venv, with Python 3.13 (COLAB_PYTHON, else pyenv's or python3.13 on
   PATH) and Colab's versions of every package installing labkit touches (pins.txt);
2. labkit's wheel; `pip install --dry-run --report` of it must change no pin and add only ADDED;
3. the notebooks' setup cell, run in a kernel with the stand-in `google.colab` (standin/) imported:
   unset, it stops with its one line; pointed at the wheel, it installs labkit with pip;
4. every pin is still the version Colab has;
5. in that venv: tests/test_widgets.py (ipywidgets 7.7) and in_colab.py (`notebook.start` on a fake Drive);
6. `labkit run-all` on the demo (every numbered notebook, its HTML page, report.pdf; 05's and 06's
   `steps` at STEPS: pytest's nbval runs them at their defaults) and index.ipynb under papermill.

It prints each step's time and a last line `colab check: N of 7 steps ok`; exit status 1 if any failed.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv"
BIN = VENV / "bin"
# What installing labkit adds to Colab's runtime: labkit and the packages Colab does not ship
ADDED = {"labkit-backdoor", "papermill", "fpdf2"}
# 05's fine-tuning and 06's Neural Cleanse here: the same code as at their defaults (144 and 200
# steps, which nbval runs), a sixth of the training
STEPS = 24
sys.path.insert(0, str(ROOT))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    lines = (HERE / "pins.txt").read_text().splitlines()
    return {canonical(n): v for n, v in (line.split("==") for line in lines if "==" in line)}


def run(*args, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off",
           "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode:
        noise = "is ignored: it is neither a file nor a directory"  # this machine's extra indexes
        out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if noise not in line)
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{out[-4000:]}")
    return proc


def python313() -> str:
    found = [os.environ.get("COLAB_PYTHON", "")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = run(pyenv, "root").stdout.strip()
        found += sorted(glob.glob(f"{root}/versions/3.13.*/bin/python3"))
    found.append(shutil.which("python3.13") or "")
    for python in filter(None, found):
        return python
    raise AssertionError("no Python 3.13: set COLAB_PYTHON to one (docs/colab.md says how to get it)")


def build_venv(work: Path) -> None:
    shutil.rmtree(VENV, ignore_errors=True)
    run(python313(), "-m", "venv", VENV)
    run(BIN / "pip", "install", "-q", "--no-compile", "-r", HERE / "pins.txt")  # .pyc as imported


def build_wheel(work: Path) -> Path:
    source = work / "source"  # a copy: building in the checkout would leave build/ and egg-info there
    shutil.copytree(ROOT / "labkit", source / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    run(BIN / "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", source)
    return next((work / "dist").glob("*.whl"))


def changes(installed: dict[str, str]) -> list[str]:
    """Each pinned package whose version differs from Colab's, as `name pin -> now`."""
    return [f"{n} {v} -> {installed[n]}" for n, v in pins().items() if installed.get(n, v) != v]


def dry_run(wheel: Path, work: Path) -> None:
    report = work / "report.json"
    run(BIN / "pip", "install", "-q", "--dry-run", "--report", report, wheel)
    install = {canonical(i["metadata"]["name"]): i["metadata"]["version"]
               for i in json.loads(report.read_text())["install"]}
    assert not changes(install), f"installing labkit would change Colab's: {changes(install)}"
    added = set(install) - set(pins())
    assert added == ADDED, f"installing labkit adds {sorted(added)}; expected {sorted(ADDED)}"
    print(f"  adds to Colab's runtime: {', '.join(sorted(added))}")


def setup_cell(source: str | None) -> str:
    """01's setup cell, its install source set to `source` (None: as committed, unset)."""
    import nbformat

    from labkit.student import set_install_source

    nb = nbformat.read(ROOT / "notebooks" / "01_evaluate.ipynb", as_version=4)
    if source is not None:
        set_install_source(nb, source, "01_evaluate.ipynb")
    return nb.cells[1].source


def run_cells(cells: list[str], work: Path, name: str) -> list[dict]:
    """Run `cells` in a kernel of the venv, google.colab imported first; the cells' outputs."""
    cells = ["import google.colab  # as in Colab's kernel", *cells]
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
          "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": c} for i, c in enumerate(cells)]}
    path = work / f"{name}.ipynb"
    path.write_text(json.dumps(nb))
    run(BIN / "jupyter-nbconvert", "--to", "notebook", "--execute", "--allow-errors", "--inplace",
        path, cwd=work, env={"PYTHONPATH": str(HERE / "standin")})
    return [json.loads(path.read_text())["cells"][i]["outputs"] for i in range(1, len(cells))]


def install_as_colab_does(wheel: Path, work: Path) -> None:
    unset = run_cells([setup_cell(None)], work, "setup_unset")[0]
    errors = [o for o in unset if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["SystemExit"] and "set source" in errors[0]["evalue"], unset
    from labkit.colab import DISTRIBUTION

    setup, after = run_cells([setup_cell(str(wheel)),
                              "from google.colab import drive; import labkit; print(drive.mounted, labkit.__file__)"],
                             work, "setup")
    assert not [o for o in setup + after if o["output_type"] == "error"], setup + after
    text = "".join("".join(o.get("text", "")) for o in after)  # a list of lines in a saved notebook
    assert text.startswith("[] ") and str(VENV) in text, text  # no Drive for a wheel; not the checkout's
    version = run(BIN / "pip", "show", DISTRIBUTION).stdout
    assert "Location: " + str(VENV) in version and "Editable" not in version, version


def pins_unchanged(work: Path) -> None:
    freeze = run(BIN / "pip", "freeze").stdout.splitlines()
    installed = {canonical(n): v for n, v in (line.split("==") for line in freeze if "==" in line)}
    assert not changes(installed), f"pip changed Colab's: {changes(installed)}"


def tests_in_venv(work: Path) -> None:
    proc = run(BIN / "python", "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
               ROOT / "tests" / "test_widgets.py", HERE / "in_colab.py", cwd=work, check=False,
               env={"PYTHONPATH": str(HERE / "standin"), "LABKIT_HOME": str(work / "home"),
                    "LABKIT_DRIVE": str(work / "MyDrive" / "labkit")})
    print("  " + (proc.stdout.strip().splitlines() or ["(no output)"])[-1])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def notebooks(work: Path) -> None:
    home = work / "home"
    home.mkdir(exist_ok=True)
    (home / "notebooks").symlink_to(ROOT / "notebooks")
    env = {"LABKIT_HOME": str(home)}
    run_all = ("from labkit import report\n"  # `labkit run-all`, with 05's and 06's steps at STEPS
               f"out = report.run_all(parameters={{'steps': {STEPS}}})\n"
               "print(', '.join(f'{n} {s:.1f} s' for n, s in report.durations(out).items()))")
    out = run(BIN / "python", "-c", run_all, cwd=home, env=env).stdout
    print("  " + "\n  ".join(line for line in out.splitlines() if "s" in line)[-1500:])
    run(BIN / "python", "-m", "papermill", "--kernel", "python3", "--no-progress-bar",
        ROOT / "notebooks" / "index.ipynb", home / "report" / "index.ipynb", cwd=home / "notebooks", env=env)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="labkit-colab-"))
    wheel = None
    steps = [("Colab's runtime in a fresh venv", lambda: build_venv(work)),
             ("labkit's wheel", lambda: build_wheel(work)),
             ("dry run: nothing pinned changes", lambda: dry_run(wheel, work)),
             ("the setup cell installs the wheel", lambda: install_as_colab_does(wheel, work)),
             ("every pin as Colab has it", lambda: pins_unchanged(work)),
             ("widgets, notebook.start on Drive", lambda: tests_in_venv(work)),
             ("every notebook on the demo", lambda: notebooks(work))]
    failed, passed, start = [], 0, time.time()
    for name, step in steps:
        t = time.time()
        try:
            result = step()
            wheel = result if isinstance(result, Path) else wheel
            passed += 1
            print(f"ok   {name} ({time.time() - t:.0f} s)", flush=True)
        except Exception as err:  # noqa: BLE001  (a failed step is reported; the others still run)
            failed.append(name)
            print(f"FAIL {name} ({time.time() - t:.0f} s): {err}", flush=True)
            if wheel is None:
                break  # no venv or no wheel: nothing after it can run
    print(f"colab check: {passed} of {len(steps)} steps ok in {time.time() - start:.0f} s"
          + (f"; failed: {', '.join(failed)}; work folder {work}" if failed else ""))
    if not failed:
        shutil.rmtree(work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
