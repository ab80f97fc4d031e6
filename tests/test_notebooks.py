"""The notebooks: committed clean, parameterised for papermill, and runnable on the lab's files.

nbval runs every notebook on the demo (see pyproject.toml); these tests add papermill runs.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

import labkit
from labkit.colab import INSTALL_SOURCE, setup_line
from labkit.data import LAB_FILES, write_split
from labkit.prune import mean_activations
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAPERMILL = [sys.executable, "-m", "papermill", "--kernel", "python3", "--no-progress-bar"]


def test_every_notebook_of_the_lab_is_there():
    assert [p.name for p in NOTEBOOKS] == ["01_evaluate.ipynb", "02_prune.ipynb", "03_goodnet.ipynb",
                                           "04_analysis.ipynb", "05_beyond_pruning.ipynb", "06_unknown_trigger.ipynb",
                                           "index.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


def cells_of(path):
    return nbformat.read(path, as_version=4).cells


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_start_the_same_way(path):
    cells = cells_of(path)
    title, install, setup, params, check = cells[:5]
    assert title.source.startswith("# ") and setup.source.startswith("import labkit")
    assert '"google.colab" in sys.modules' in install.source and '%pip install -q "{source}"' in install.source
    assert install.source.count(setup_line(INSTALL_SOURCE)) == 1, "the notebooks' install sources differ"
    assert install.source == cells_of(NOTEBOOKS[0])[1].source
    assert not re.search(r"github\.com|https?://(?!colab\.research)", "\n".join(c.source for c in cells))
    assert params.metadata.get("tags") == ["parameters"]
    for line in params.source.splitlines():  # literals with type hints and comments only
        assert ": " in line.split("=")[0] and "#" in line, line
    assert 'dataset: str = "demo"' in params.source
    assert "notebook.start(dataset" in check.source


def test_05_steps_default_is_the_librarys():
    # papermill needs a literal there; it must stay the default `labkit fine-prune` uses
    from labkit.finetune import STEPS

    params = nbformat.read(ROOT / "notebooks" / "05_beyond_pruning.ipynb", as_version=4).cells[3]
    assert f"steps: int = {STEPS} " in params.source


def papermill(src, out, cwd, *params, env=None):
    args = [a for name, value in params for a in ("-p", name, str(value))]
    proc = subprocess.run([*PAPERMILL, str(src), str(out), *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return nbformat.read(out, as_version=4)


def test_02_prune_with_drop_4_from_the_project_folder(demo_lab, tmp_path):
    # from notebooks/ nbval runs it (and `labkit run-all`): one run here, from the project folder
    saved = demo_lab.repaired_dir / "repaired_4.h5"
    saved.unlink(missing_ok=True)
    nb = papermill("notebooks/02_prune.ipynb", tmp_path / "out.ipynb", ROOT, ("drop", 4))
    noise = [o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not [t for t in noise if "tensorflow" in t.lower() or "I0000" in t], noise  # no TF log lines
    info = json.loads(saved.with_suffix(".json").read_text())
    assert info["drop"] == 4 and info["valid_accuracy"] <= info["valid_accuracy_badnet"] - 4
    repaired = labkit.load_model(saved)
    kernel, bias = repaired.model.get_layer("conv_3").get_weights()
    zeroed = np.flatnonzero(~kernel.any(axis=(0, 1, 2)) & (bias == 0))
    assert set(info["pruned_channels"]) <= set(zeroed) and len(info["pruned_channels"]) == info["step"]


def test_bad_parameter_stops_with_one_clear_line(demo_lab, tmp_path):
    proc = subprocess.run([*PAPERMILL, "02_prune.ipynb", str(tmp_path / "out.ipynb"), "-p", "drop", "150"],
                          cwd=ROOT / "notebooks", capture_output=True, text=True)
    assert proc.returncode != 0
    assert "drop=150: give the allowed fall in validation accuracy" in proc.stderr
    assert not (demo_lab.repaired_dir / "repaired_150.h5").exists()


def write_course_files(root: Path, net, n: int = 60):
    """Small files in the course's layout: data/cl, data/bd (channels-first) and models/bd_net.h5.

    Labels are the net's own predictions, so the net is a perfect "BadNet" on them: what the
    notebooks check is that the real-data path runs end to end.
    """
    from conftest import tiny_faces

    lab = labkit.lab("lab", root)
    for i, name in enumerate(LAB_FILES):
        x, _ = tiny_faces(n, seed=10 + i)
        write_split(lab.split(name).path, x, net.predict(x))
    labkit.save_model(net, lab.badnet_path)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    return lab


def run_all_on_lab(root, **parameters):
    from labkit.report import run_all

    out = run_all("lab", root=root, progress=False, parameters=parameters)
    names = {p.name for p in out.iterdir()}
    for nb in ("01_evaluate", "02_prune", "03_goodnet", "04_analysis"):
        assert {f"{nb}.ipynb", f"{nb}.html"} <= names
    assert {"report.md", "report.pdf", "04_results.csv", "02_sweep.png"} <= names
    with h5py_file(root / "data" / "cl" / "valid.h5") as f:
        assert f["data"].shape[1] == 3  # the course's channels-first files were read as they are
    return out


def h5py_file(path):
    import h5py

    return h5py.File(path, "r")


def test_real_data_path_end_to_end(tiny_net, tmp_path):
    write_course_files(tmp_path, tiny_net)
    out = run_all_on_lab(tmp_path, steps=12)  # 05's fine-tuning and 06's search: 12 steps, not the lab's
    assert (tmp_path / "models" / "repaired" / "repaired_4.h5").is_file()
    report = (out / "report.md").read_text()
    assert "the course's data files" in report and "10 of 10 classes searched in full (8 faces, 12 steps)" in report
    said = [o.get("text", "") for c in nbformat.read(out / "05_beyond_pruning.ipynb", as_version=4).cells
            for o in c.get("outputs", [])]
    assert any("after 12 steps of fine-tuning" in t for t in said), said


def test_real_data_path_with_the_lab3_weights(real, tmp_path):
    write_course_files(tmp_path, labkit.load_model(real / "lab3_bd_weights.h5"), n=120)
    papermill(ROOT / "notebooks" / "02_prune.ipynb", tmp_path / "out.ipynb", tmp_path / "notebooks",
              ("dataset", "lab"), ("drop", 4), env={"LABKIT_HOME": str(tmp_path)})
    info = json.loads((tmp_path / "models" / "repaired" / "repaired_4.json").read_text())
    assert info["source_sha256"] == labkit.files.file_sha256(tmp_path / "models" / "bd_net.h5")


def test_02_order_parameter_and_03_uses_only_what_02_saved(demo_lab, tmp_path):
    stale = demo_lab.repaired_dir / "repaired_6.json"  # as if an earlier run of 02 had used drop 6
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("{}")
    papermill("02_prune.ipynb", tmp_path / "02.ipynb", ROOT / "notebooks", ("drop", 4), ("order", "decreasing"))
    run = json.loads((demo_lab.repaired_dir / "02_run.json").read_text())
    assert run == {"drops": [2.0, 4.0, 10.0], "order": "decreasing"}
    info = json.loads((demo_lab.repaired_dir / "repaired_4.json").read_text())
    means = mean_activations(labkit.load_badnet(demo_lab), demo_lab.valid)
    assert (np.diff(means[info["pruned_channels"]]) <= 0).all()  # most active first
    proc = subprocess.run([*PAPERMILL, "03_goodnet.ipynb", str(tmp_path / "03.ipynb"), "-p", "drop", "6"],
                          cwd=ROOT / "notebooks", capture_output=True, text=True)
    assert proc.returncode != 0 and "the last run of 02 saved B' for X = [2.0, 4.0, 10.0]" in proc.stderr
    stale.unlink()


@pytest.mark.parametrize("path", NOTEBOOKS[:6], ids=lambda p: p.name)
def test_notebooks_end_with_questions_and_exercises(path):
    cells = nbformat.read(path, as_version=4).cells
    assert "## Questions" in cells[-1].source and "## Change a parameter and explain" in cells[-1].source
    assert all(len(c.source.splitlines()) <= 11 for c in cells if c.cell_type == "code")


def test_no_project_target_reaches_a_student():
    # targets are checked by tests and benchmarks (tests/test_finetune.py), never printed in the lab
    for path in NOTEBOOKS:
        text = nbformat.read(path, as_version=4).cells
        for cell in text:
            low = cell.source.lower()
            assert "target met" not in low and "target not met" not in low and "targets this" not in low, path.name


def test_04_verdicts_come_from_a_visible_rule():
    cells = nbformat.read(ROOT / "notebooks" / "04_analysis.ipynb", as_version=4).cells
    rule = next(c.source for c in cells if "def verdict" in c.source)
    for name in ("BEATEN", "SURVIVES", "SMALL_COST"):
        assert f"{name} = " in rule  # thresholds are named constants in the cell
    students_see = [c.source for c in cells if "instructor" not in c.metadata.get("tags", [])]
    for text in (*students_see, (ROOT / "labkit" / "analysis.py").read_text()):
        assert "prune-aware" not in text and "pruning-aware" not in text  # nothing claimed unmeasured


def test_notebooks_run_on_the_other_demo_badnets(tmp_path):
    """Each notebook also runs with another demo BadNet (nbval runs them all on "course"): 01 with
    the anonymous one (its trigger unknown: no attack column), 02-04 with three triggers (one
    attack column per trigger). In a demo lab of its own, so it runs beside the project's."""
    from labkit.demo import build_demo

    demo_lab = build_demo(tmp_path / "project", progress=False)
    notebooks, env = ROOT / "notebooks", {"LABKIT_HOME": str(demo_lab.root)}
    nb = papermill("01_evaluate.ipynb", tmp_path / "01.ipynb", notebooks, ("badnet", "anonymous"), env=env)
    said = [o.get("text", "") for c in nb.cells for o in c.get("outputs", [])]
    assert any("The trigger of BadNet 'anonymous' is unknown to the defender" in t for t in said)
    anonymous = labkit.lab("demo", demo_lab.root, badnet="anonymous")
    assert list(pd_csv(anonymous.report_dir / "01_evaluation.csv")) == ["Unnamed: 0", "clean_accuracy"]
    for name in ("02_prune", "03_goodnet", "04_analysis"):
        papermill(f"{name}.ipynb", tmp_path / f"{name}.ipynb", notebooks, ("badnet", "multi_trigger"), env=env)
    multi = labkit.lab("demo", demo_lab.root, badnet="multi_trigger")
    info = json.loads((multi.repaired_dir / "repaired_4.json").read_text())
    assert info["source_model"].endswith("multi_trigger_bd_net.h5")
    assert (multi.report_dir / "report.md").is_file()
    for csv, column in (("02_sweep.csv", "valid_attack_success_rate_pct"), ("03_goodnet.csv", "G attack success rate"),
                        ("04_results.csv", "G attack success rate")):
        columns = list(pd_csv(multi.report_dir / csv))
        assert [f"{column}:{t}" in columns for t in ("sunglasses", "eyebrows", "lipstick")] == [True] * 3, columns


def pd_csv(path):
    import pandas as pd

    return pd.read_csv(path)
