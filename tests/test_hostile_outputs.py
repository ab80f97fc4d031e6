"""Outputs: decided and checked before any work, written whole and together, or not at all."""
import os
import re

import pytest
from hostile import forbid, refused, run_limited, snapshot

import labkit
from labkit import files, repaired
from labkit import sweep as sweep_module
from labkit.errors import LabError


@pytest.fixture
def no_sweep(monkeypatch):
    forbid(monkeypatch, sweep_module, "sweep", "the sweep ran")


def prune_args(lab, out):
    return ["prune", lab.badnet_path, lab.valid.path, "--drops", "2", "--out", out]


def test_out_is_a_file_or_the_model(tiny_lab, tmp_path, capsys, no_sweep):
    (tmp_path / "notes.txt").write_text("mine")
    refused(capsys, prune_args(tiny_lab, tmp_path / "notes.txt"), "notes.txt: is a file, so",
            tmp_path)
    refused(capsys, prune_args(tiny_lab, tiny_lab.badnet_path), "bd_net.h5: is a file, so",
            tmp_path)


def test_an_output_that_is_a_symlink_or_a_folder(tiny_lab, tmp_path, capsys, no_sweep):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere.csv").write_text("keep me")
    os.symlink(tmp_path / "elsewhere.csv", out / "sweep.csv")
    refused(capsys, prune_args(tiny_lab, out), "sweep.csv: the output is a symbolic link", tmp_path)
    (out / "sweep.csv").unlink()
    (out / "repaired_2.json").mkdir()
    refused(capsys, prune_args(tiny_lab, out), "repaired_2.json: the output exists and is not a file",
            tmp_path)


def test_a_folder_labkit_cannot_write_in(tiny_lab, capsys, no_sweep):
    # /proc takes no new files, even from root: a read-only place
    refused(capsys, prune_args(tiny_lab, "/proc/labkit-out"), "/proc: labkit cannot write in this folder",
            tiny_lab.root)


def test_bench_out_is_checked_before_the_benchmark(tmp_path, capsys, monkeypatch):
    from labkit import bench
    monkeypatch.setattr(bench, "run", lambda **kw: pytest.fail("the benchmark ran"))
    (tmp_path / "bench.json").mkdir()
    refused(capsys, ["bench", "--out", tmp_path / "bench.json"], "bench.json: the output exists and is "
            "not a file", tmp_path)


def test_disk_full_mid_run_leaves_nothing_and_the_next_run_works(tiny_lab, tmp_path):
    out = tmp_path / "out"
    before = snapshot(tmp_path, tiny_lab.root)
    code, _, err = run_limited(prune_args(tiny_lab, out), file_kb=64)  # sweep.csv fits, B' does not
    # the finished stages' progress bars stay above it; everything else is the one line
    lines = [ln for ln in err.split("\n") if ln.strip() and not re.search(r"\d+/\d+ \[", ln)]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("labkit: error: "), err
    assert "File too large" in lines[0] and "nothing was written" in lines[0]
    assert snapshot(tmp_path, tiny_lab.root) == before  # no sweep.csv, no temporary files
    assert not out.exists()  # not even the folder it made
    code, _, err = run_limited(prune_args(tiny_lab, out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["repaired_2.h5", "repaired_2.json", "sweep.csv"]
    assert list(repaired.load_repaired(out)) == [2.0]


def test_outputs_of_a_failed_transaction_are_not_left(tmp_path):
    with pytest.raises(RuntimeError):
        with files.transaction():
            files.write_json(tmp_path / "a.json", {"a": 1})
            files.write_json(tmp_path / "new" / "deeper" / "b.json", {"b": 2})
            raise RuntimeError("killed mid-run")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "repaired_2.h5"
    with files.atomic_path(target) as first, files.atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("run 1")
        second.write_text("run 2")
    assert target.read_text() == "run 1"  # the last to finish wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["repaired_2.h5"]


def test_a_record_and_its_model_are_a_pair(tiny_net, tmp_path):
    model = labkit.save_model(tiny_net, tmp_path / "repaired_2.h5")
    files.write_json(tmp_path / "repaired_2.json", {"drop": 2}, partner=model)
    assert files.read_json(tmp_path / "repaired_2.json", partner=model)["drop"] == 2
    other = labkit.models.copy_net(tiny_net)
    other.scale = 1.0
    labkit.save_model(other, model)  # another run's model, killed before its record
    with pytest.raises(LabError, match="repaired_2.json: this record does not belong to repaired_2.h5"):
        files.read_json(tmp_path / "repaired_2.json", partner=model)


def test_repaired_pair_checked_by_load_repaired(tiny_lab, tmp_path, capsys):
    out = tmp_path / "out"
    assert labkit.cli.main([str(a) for a in prune_args(tiny_lab, out)]) == 0
    capsys.readouterr()
    (out / "repaired_2.h5").write_bytes(tiny_lab.badnet_path.read_bytes())
    with pytest.raises(LabError, match="does not belong to repaired_2.h5"):
        repaired.load_repaired(out)
