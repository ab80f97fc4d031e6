"""Colab's pins (tests/colab/pins.txt) and the command that refreshes them.

The Colab check itself (tests/colab/check.py) runs in CI after pytest; its command there:
    python tests/colab/check.py
and the refresh, run here on a made-up freeze:
    python tests/colab/pins.py pip-freeze.txt
"""
import shutil
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "colab"))
from check import ADDED, canonical, pins  # noqa: E402

DEPENDENCIES = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_every_dependency_colab_ships_is_pinned():
    names = {canonical(Requirement(r).name) for r in DEPENDENCIES}
    assert names - ADDED <= set(pins()), "pyproject.toml has new dependencies: refresh tests/colab/pins.txt"
    assert {"tensorflow", "keras", "ipywidgets", "widgetsnbextension"} <= set(pins())


def test_refresh_keeps_the_freeze_lines_labkit_needs(tmp_path):
    (tmp_path / "tests" / "colab").mkdir(parents=True)
    shutil.copy2(ROOT / "tests" / "colab" / "pins.py", tmp_path / "tests" / "colab")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    freeze = (ROOT / "tests" / "colab" / "pins.txt").read_text().splitlines()[1:]
    (tmp_path / "pip-freeze.txt").write_text("\n".join(
        ["zzz-not-labkits==1.0", "foo @ git+https://example.org/foo", *freeze]) + "\n")
    subprocess.run([sys.executable, "tests/colab/pins.py", "pip-freeze.txt"], cwd=tmp_path, check=True,
                   capture_output=True)
    kept = (tmp_path / "tests" / "colab" / "pins.txt").read_text().splitlines()
    assert kept[0].startswith("#") and set(kept[1:]) <= set(freeze)
    assert {line.split("==")[0] for line in kept[1:]} >= {"tensorflow", "keras", "ipywidgets", "numpy"}
