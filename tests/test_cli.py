"""`labkit eval`: a rounded table and the course's two lines, --json, every model form, one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

import labkit
from labkit import cli
from labkit.models import save_model


def run(*args):
    """Run the real `labkit` command in a subprocess (as a student would)."""
    proc = subprocess.run([sys.executable, "-m", "labkit", *map(str, args)],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def main(args):
    return cli.main([str(a) for a in args])


def expected_rates(net, lab):
    x, y = lab.valid.load()
    xb, yb = lab.bd_valid.load()
    return 100 * np.mean(net.predict(x) == y), 100 * np.mean(net.predict(xb) == yb)


def test_eval_prints_the_courses_two_lines(tiny_lab, tiny_net, capsys):
    acc, asr = expected_rates(tiny_net, tiny_lab)
    assert main(["eval", tiny_lab.valid.path, tiny_lab.bd_valid.path, tiny_lab.badnet_path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[-2:] == [f"{acc:.2f}", "%"] and out[2].split()[-2:] == [f"{asr:.2f}", "%"]
    assert out[-2:] == [f"Clean Classification accuracy: {acc}", f"Attack Success Rate: {asr}"]
    assert acc == pytest.approx(92.5)  # the fixture mislabels 3 of 40 images


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_eval_json_for_each_model_form(tiny_lab, tiny_net, tmp_path, capsys, suffix):
    path = save_model(tiny_net, tmp_path / f"model{suffix}")
    assert main(["eval", tiny_lab.test.path, tiny_lab.bd_test.path, path, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    x, y = tiny_lab.test.load()
    assert result["clean_accuracy"] == pytest.approx(100 * np.mean(tiny_net.predict(x) == y))
    assert result["model"] == str(path) and result["input_scale"] == pytest.approx(1 / 255)


def test_eval_real_weights_file(real, tmp_path, capsys):
    net = labkit.load_model(real / "lab3_bd_weights.h5")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (30, 55, 47, 3)).astype(np.float32)
    labkit.write_split(tmp_path / "valid.h5", x, net.predict(x))
    labkit.write_split(tmp_path / "bd_valid.h5", x, np.zeros(30))
    assert main(["eval", tmp_path / "valid.h5", tmp_path / "bd_valid.h5",
                 real / "lab3_bd_weights.h5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean_accuracy"] == 100


def test_near_chance_accuracy_points_at_the_scaling(tiny_lab, tmp_path, capsys):
    x, y = tiny_lab.valid.load()
    labkit.write_split(tmp_path / "wrong.h5", x, (y + 1) % 10)  # nothing right: accuracy 0
    assert main(["eval", tmp_path / "wrong.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path]) == 0
    err = capsys.readouterr().err
    # tiny_net takes pixels / 255, saved with the model: the hint names the other choice
    assert "clean accuracy 0.00 % is near chance" in err and "try raw pixels 0..255 (--scale 1)" in err
    assert main(["eval", tiny_lab.valid.path, tiny_lab.bd_valid.path, tiny_lab.badnet_path]) == 0
    assert "near chance" not in capsys.readouterr().err


def test_errors_are_one_line_with_exit_2_and_nothing_written(tiny_lab, tmp_path):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = run("eval", tmp_path / "nope.h5", tiny_lab.bd_valid.path, tiny_lab.badnet_path)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert err.startswith(f"labkit: error: {tmp_path / 'nope.h5'}: clean data file not found")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("command, bad, expect", [
    (["eval", "V", "BD", "M"], "M", "model file not found"),
    (["prune", "M", "V", "--poisoned", "BD"], "BD", "poisoned validation file not found"),
    (["prune", "M", "V"], "V", "a lab file needs datasets 'data' and 'label'"),
    (["fine-prune", "M", "V"], "M", "model file not found"),
    (["goodnet", "M", "M2", "V"], "M2", "model file not found"),
])
def test_inputs_are_checked_before_tensorflow_starts(tiny_lab, tmp_path, capsys, monkeypatch,
                                                     command, bad, expect):
    # a typo in a path answers at once, not after TensorFlow's start-up or pool_3 of another file
    from hostile import forbid

    forbid(monkeypatch, cli, "import_tensorflow_quietly", "TensorFlow started")
    files = {"V": tiny_lab.valid.path, "BD": tiny_lab.bd_valid.path, "M": tiny_lab.badnet_path,
             "M2": tiny_lab.badnet_path}
    files[bad] = tmp_path / "nope.h5"
    if expect.startswith("a lab file"):  # there, but a model where data belongs
        files[bad] = tiny_lab.badnet_path
    assert main([files.get(a, a) for a in command]) == 2
    assert capsys.readouterr().err.startswith(f"labkit: error: {files[bad]}: {expect}")


def test_bad_scale_argument_is_a_usage_error(tiny_lab):
    code, _, err = run("eval", tiny_lab.valid.path, tiny_lab.bd_valid.path, tiny_lab.badnet_path,
                       "--scale", "half")
    assert code == 2 and "'half': use 1 (raw pixels) or 1/255" in err



# runs the command with run-all's notebooks left out, then says whether TensorFlow was loaded
LOADED = """import sys
from pathlib import Path
from labkit import cli, report
report.run_all = lambda dataset: Path(".")
try:
    cli.main(sys.argv[1:])
finally:
    print("tensorflow loaded:", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("args, loaded", [
    (["--help"], False), (["student"], False), (["student", "README.md"], False),
    (["course", "README.md"], False),
    (["eval", "x.h5"], False), (["run-all"], False),
    (["eval", "missing.h5", "missing.h5", "missing.h5"], False),  # refused before it starts
    (["eval", "V", "BD", "M"], True)])
def test_tensorflow_is_imported_only_by_commands_that_run_a_network(args, loaded, tiny_lab):
    files = {"V": tiny_lab.valid.path, "BD": tiny_lab.bd_valid.path, "M": tiny_lab.badnet_path}
    args = [str(files.get(a, a)) for a in args]
    proc = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True)
    assert proc.stdout.splitlines()[-1] == f"tensorflow loaded: {loaded}", proc.stdout + proc.stderr
