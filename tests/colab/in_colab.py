"""Run by tests/colab/check.py in Colab's runtime, with the stand-in google.colab on PYTHONPATH:
`notebook.start(dataset="lab")` mounts Drive and uses the course's files kept in MyDrive/labkit/."""
import os
from pathlib import Path

import google.colab  # noqa: F401  (Colab's kernel has it imported: labkit takes its Colab branches)
from google.colab import drive

from labkit import demo, notebook


def test_start_lab_uses_the_course_files_on_drive(tmp_path, monkeypatch, capsys):
    assert notebook.in_colab() and str(notebook.DRIVE_FOLDER) == os.environ["LABKIT_DRIVE"]
    shipped = demo.build_demo(Path(os.environ["LABKIT_HOME"]), progress=False)  # the notebooks' demo
    for rel, source in zip(notebook.COURSE_FILES, [shipped.valid.path, shipped.test.path,
                                                   shipped.bd_valid.path, shipped.bd_test.path,
                                                   shipped.badnet_path]):
        (notebook.DRIVE_FOLDER / rel).parent.mkdir(parents=True, exist_ok=True)
        (notebook.DRIVE_FOLDER / rel).write_bytes(source.read_bytes())  # under the course's names
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "student"))
    lab = notebook.start("lab")
    assert drive.mounted == ["/content/drive"]
    assert lab.root == tmp_path / "student" and lab.badnet_path == lab.root / "models" / "bd_net.h5"
    for rel in notebook.COURSE_FILES:
        assert (lab.root / rel).readlink() == notebook.DRIVE_FOLDER / rel
    assert capsys.readouterr().out.count("using ") == len(notebook.COURSE_FILES)
    assert lab.valid.load()[0].shape == shipped.valid.load()[0].shape
