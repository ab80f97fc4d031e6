"""Hostile paths and the error mechanism: one escaped line, a traceback only for labkit's bugs."""
import os

import pytest
from hostile import refused

from labkit import cli
from labkit.errors import REPORT_BUGS, LabError, escape


def eval_args(lab, **swap):
    args = {"clean": lab.valid.path, "poisoned": lab.bd_valid.path, "model": lab.badnet_path}
    return ["eval", *{**args, **swap}.values()]


@pytest.mark.parametrize("role", ["clean", "model"])
def test_directory(tiny_lab, tmp_path, capsys, role):
    (tmp_path / "folder.h5").mkdir()
    refused(capsys, eval_args(tiny_lab, **{role: tmp_path / "folder.h5"}),
            "folder.h5: is a folder, not a", tmp_path)


@pytest.mark.parametrize("role", ["clean", "model"])
def test_fifo_is_not_opened(tiny_lab, tmp_path, capsys, role):
    os.mkfifo(tmp_path / "pipe.h5")  # opening it would wait for a writer for ever
    refused(capsys, eval_args(tiny_lab, **{role: tmp_path / "pipe.h5"}),
            "pipe.h5: is not a regular file", tmp_path)


@pytest.mark.parametrize("role", ["clean", "model"])
def test_symlink_loop_and_broken_link(tiny_lab, tmp_path, capsys, role):
    os.symlink(tmp_path / "b.h5", tmp_path / "a.h5")
    os.symlink(tmp_path / "a.h5", tmp_path / "b.h5")
    refused(capsys, eval_args(tiny_lab, **{role: tmp_path / "a.h5"}),
            "a.h5: a symbolic link that loops back on itself", tmp_path)
    os.symlink(tmp_path / "gone.h5", tmp_path / "broken.h5")
    refused(capsys, eval_args(tiny_lab, **{role: tmp_path / "broken.h5"}),
            "not found (a symbolic link to a missing file)", tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tiny_lab, tmp_path, capsys):
    path = tmp_path / "secret.h5"
    path.write_bytes(tiny_lab.valid.path.read_bytes())
    path.chmod(0)
    refused(capsys, eval_args(tiny_lab, clean=path), "secret.h5: cannot be read (Permission denied)",
            tmp_path)


def test_newline_and_terminal_escapes_in_a_name_stay_on_one_line(tiny_lab, tmp_path, capsys):
    forged = "x\x1b[2K\rClean Classification accuracy: 100.00 %\nAttack Success Rate: 0.00 %.h5"
    line = refused(capsys, eval_args(tiny_lab, clean=tmp_path / forged), "file not found", tmp_path)
    assert "x\\x1b[2K\\rClean Classification accuracy: 100.00 %\\nAttack" in line


def test_names_inside_files_are_escaped(tiny_lab, tmp_path, capsys):
    import h5py
    import numpy as np
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data\x1b]0;owned\x07"] = np.zeros(3)
    line = refused(capsys, eval_args(tiny_lab, clean=tmp_path / "x.h5"), "found ['data\\x1b]0;owned\\x07']",
                   tmp_path)
    assert "\x07" not in line


def test_lab_error_is_escaped_wherever_it_is_shown():
    assert str(LabError("a\nb\x1b[31m")) == "a\\nb\\x1b[31m"
    assert str(LabError("model\u202eh5.exe")) == "model\\u202eh5.exe"  # no right-to-left override
    assert escape(escape("tab\there")) == "tab\\there"  # escaping twice changes nothing more


def test_system_refusals_are_one_line(tiny_lab, tmp_path, capsys, monkeypatch):
    def full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "out.csv"))
    monkeypatch.setattr(cli, "_eval", full)
    refused(capsys, eval_args(tiny_lab), "out.csv: No space left on device; nothing was written", tmp_path)


def test_a_bug_in_labkit_gets_a_traceback_and_where_to_report_it(tiny_lab, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_eval", lambda args: 1 / 0)
    code = cli.main([str(a) for a in eval_args(tiny_lab)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err
    assert "labkit: internal error: this is a bug in labkit" in err and REPORT_BUGS in err


def test_warnings_do_not_add_lines(tiny_lab, tmp_path, capsys, monkeypatch):
    import warnings

    import numpy as np

    def noisy(args):
        warnings.warn("a library warning", UserWarning)
        np.float32(3e38) * np.float32(10)  # numpy: overflow encountered
        raise LabError(f"{tmp_path / 'x.h5'}: refused")
    monkeypatch.setattr(cli, "_eval", noisy)
    refused(capsys, eval_args(tiny_lab), "x.h5: refused", tmp_path)
