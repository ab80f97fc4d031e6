"""pyproject.toml and environment.yml install the same thing, and nothing that breaks Colab."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_environment_yml_installs_this_package_with_existing_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert len(pip) == 1, "environment.yml should install the package, not list its dependencies again"
    extras = re.fullmatch(r'-e "?\.\[([a-z,]+)\]"?', pip[0]).group(1).split(",")
    assert set(extras) <= set(PROJECT["optional-dependencies"])
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    python = [d for d in conda if d.startswith("python=")][0].split("=")[1]
    floor = PROJECT["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, floor.split(".")))
    # a conda package beside pip's copy of the same dependency (TensorFlow above all) breaks installs
    assert not names(c.split("=")[0] for c in conda) & names(PROJECT["dependencies"])


def test_dependencies_keep_colabs_tensorflow():
    deps = PROJECT["dependencies"]
    assert "tensorflow" in names(deps) and "tensorflow-cpu" not in names(deps)
    assert not [d for d in deps if re.search(r"<|==|~=", d)], "only lower bounds"
    assert PROJECT["scripts"]["labkit"] == "labkit.cli:main"


def test_the_distribution_has_its_own_name():
    from labkit.colab import DISTRIBUTION, INSTRUCTOR_HINT

    assert PROJECT["name"] == DISTRIBUTION != "labkit"  # `labkit` on PyPI is another project
    assert yaml.safe_load((ROOT / "environment.yml").read_text())["name"] == DISTRIBUTION
    assert f"'{DISTRIBUTION}[instructor]'" in INSTRUCTOR_HINT


def test_ci_runs_the_colab_check():
    assert "python tests/colab/check.py" in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests[^\n]*\n+```bash\n(.+?)\n```", readme, re.S).group(1)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command.strip() in ci_lines, "README's test command and .ci/run differ"
