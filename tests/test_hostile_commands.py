"""Every command that writes refuses the same hostile requests the same way: in one line, before
any work, changing no file (the checks of `labkit.files`)."""
import collections
import os
from pathlib import Path

import pytest
from hostile import forbid, refused

from labkit import demo, files, finetune, modelfile, models, student
from labkit import sweep as sweep_module
from labkit.errors import LabError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_work(monkeypatch):
    """The long work of every command fails the test if it starts."""
    for module, name in ((sweep_module, "sweep"), (finetune, "fine_prune"), (modelfile, "load_model"),
                         (student, "preprocessors"), (demo, "make_data"), (demo, "install_models")):
        forbid(monkeypatch, module, name, f"{module.__name__}.{name} ran")


def command(name, lab, out):
    """The command `name` on the tiny lab, writing to `out` (a folder, or G's file for goodnet)."""
    model, valid = lab.badnet_path, lab.valid.path
    return {"prune": ["prune", model, valid, "--drops", "2", "--out", out],
            "fine-prune": ["fine-prune", model, valid, "--steps", "4", "--out", out],
            "goodnet": ["goodnet", model, model, "--save", Path(out) / "G.keras"],
            "student": ["student", out],
            "standin": ["standin", out],
            "demo": ["demo", "--root", out]}[name]


COMMANDS = ["prune", "fine-prune", "goodnet", "student", "standin", "demo"]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_read_only_place(name, tiny_lab, capsys, no_work):
    # /proc takes no new files, even from root
    refused(capsys, command(name, tiny_lab, "/proc/labkit-out"), "/proc: labkit cannot write in this folder",
            tiny_lab.root)


@pytest.mark.parametrize("name", COMMANDS)
def test_a_full_disk_is_refused_before_work(name, tiny_lab, tmp_path, capsys, no_work, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: usage(1 << 30, 1 << 30, 4096))
    refused(capsys, command(name, tiny_lab, tmp_path / "out"), "the disk is full", tmp_path)


@pytest.mark.parametrize("name", COMMANDS)
def test_an_output_folder_that_is_a_file(name, tiny_lab, tmp_path, capsys, no_work):
    (tmp_path / "notes.txt").write_text("mine")
    expect = "the student edition goes to a new or empty folder" if name == "student" else "is a file, so"
    refused(capsys, command(name, tiny_lab, tmp_path / "notes.txt"), f"notes.txt: {expect}", tmp_path)


@pytest.mark.parametrize("name, out, expect", [
    ("prune", "models", "repaired_2.h5: refusing to overwrite an input file"),
    ("fine-prune", "models", "fine_pruned_4.h5: refusing to overwrite an input file"),
    ("goodnet", "models", "G.keras: refusing to overwrite an input file"),
    ("student", ROOT / "notebooks", "notebooks: the student edition goes to a new or empty folder"),
    ("standin", ROOT / "notebooks", "is inside this checkout"),
])
def test_overwriting_an_input(name, out, expect, tiny_lab, tmp_path, capsys, no_work):
    if out == "models":  # the input model carries the output's name
        out = tiny_lab.badnet_path.parent
        target = {"prune": "repaired_2.h5", "fine-prune": "fine_pruned_4.h5", "goodnet": "G.keras"}[name]
        os.replace(tiny_lab.badnet_path, out / target)
        os.symlink(target, tiny_lab.badnet_path)
    refused(capsys, command(name, tiny_lab, out), expect, tmp_path, ROOT / "notebooks")


def test_goodnet_save_onto_the_badnet_itself(tiny_net, tiny_lab, tmp_path, capsys, no_work):
    keras_badnet = models.save_model(tiny_net, tmp_path / "bd_net.keras")
    refused(capsys, ["goodnet", keras_badnet, tiny_lab.badnet_path, "--save", keras_badnet],
            "bd_net.keras: refusing to overwrite an input file", tmp_path)
    refused(capsys, ["goodnet", keras_badnet, tiny_lab.badnet_path, "--save", tmp_path / "G.h5"],
            "G.h5: save a GoodNet as .keras", tmp_path)


@pytest.mark.parametrize("name, link", [("prune", "models/repaired"), ("fine-prune", "models/repaired"),
                                        ("demo", "data/demo"), ("standin", "models")])
def test_a_symbolic_link_out_of_the_folder(name, link, tiny_lab, tmp_path, tmp_path_factory, capsys,
                                          no_work):
    """A folder labkit picks (beside the model, inside the project) that links elsewhere."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    root = tiny_lab.root if name != "standin" else tmp_path / "standin"
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, root / link)
    args = command(name, tiny_lab, root)
    if name in ("prune", "fine-prune"):
        args = args[:-2]  # the default: 'repaired' beside the model
    refused(capsys, args, f"leads out of {root}", tmp_path, elsewhere)


@pytest.mark.parametrize("args, expect", [
    (["prune", "{model}", "{valid}", "--drops", "nan"], "drop='nan'"),
    (["prune", "{model}", "{valid}", "--drops", "-2"], "drop='-2'"),
    (["fine-prune", "{model}", "{valid}", "--lr", "nan"], "learning rate nan"),
    (["fine-prune", "{model}", "{valid}", "--seed", "-1"], "seed -1: give a whole number from 0"),
    (["fine-prune", "{model}", "{valid}", "--batch-size", "99999999"], "batch size 99999999"),
    (["demo", "--seed", "-5", "--root", "{root}"], "seed -5: give a whole number from 0"),
])
def test_nan_negative_and_absurd_numbers(args, expect, tiny_lab, capsys, no_work):
    given = {"model": tiny_lab.badnet_path, "valid": tiny_lab.valid.path, "root": tiny_lab.root}
    refused(capsys, [str(a).format(**given) for a in args], expect, tiny_lab.root)


@pytest.mark.parametrize("name", ["prune", "fine-prune", "goodnet"])
def test_a_file_of_the_wrong_kind(name, tiny_lab, tmp_path, capsys, monkeypatch):
    forbid(monkeypatch, sweep_module, "sweep", "the sweep ran")
    forbid(monkeypatch, finetune, "fine_prune", "training started")
    args = command(name, tiny_lab, tmp_path / "out")
    args[1] = tiny_lab.valid.path  # a data file given as the BadNet
    refused(capsys, args, "valid.h5: an HDF5 file but neither a Keras model nor a weights file",
            tmp_path)
    if name != "goodnet":
        args = command(name, tiny_lab, tmp_path / "out")
        args[2] = tiny_lab.badnet_path  # the model given as the validation data
        refused(capsys, args, "bd_net.h5", tmp_path)


def test_run_all_refuses_a_report_folder_linked_out_of_the_project(tmp_path):
    from labkit.report import run_all

    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "01_a.ipynb").write_text("{}")
    (root / "report").mkdir()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("mine")
    os.symlink(tmp_path / "precious", root / "report" / "demo")
    with pytest.raises(LabError, match="leads out of"):
        run_all("demo", root=root, progress=False)
    assert (tmp_path / "precious" / "keep.txt").read_text() == "mine"  # run-all empties its folder
