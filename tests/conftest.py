"""Shared fixtures: small lab-format files written by the tests, and the real files of ../shared."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import labkit  # noqa: E402
from labkit.data import LAB_FILES, write_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL = SHARED / "real"


# A Python with the oldest Keras labkit admits: Colab's runtime, which tests/colab/check.py builds
OLDEST_PYTHON = Path(os.environ.get("LABKIT_OLDEST_PYTHON", ROOT / "tests" / "colab" / ".venv" / "bin" / "python"))


@pytest.fixture(scope="session")
def oldest_python():
    """OLDEST_PYTHON; the test skips where it is not built, except in CI, where .ci/run builds it."""
    if not OLDEST_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{OLDEST_PYTHON} is missing: .ci/run builds Colab's runtime there")
        pytest.skip(f"{OLDEST_PYTHON} is not built (python tests/colab/check.py builds it)")
    return OLDEST_PYTHON


@pytest.fixture(scope="session")
def real():
    """../shared/real, holding the course's real BadNet files; the test skips where it is absent."""
    if not REAL.is_dir():
        pytest.skip("../shared/real is not here (it is only beside the checkout in CI)")
    return REAL


def tiny_faces(n: int, seed: int = 0, classes: int = 10):
    """Structured stand-ins for faces: one coarse colour pattern per class, plus noise.

    Returns raw 0..255 images (n, 55, 47, 3) and their classes.
    """
    prototypes = np.random.default_rng(1234).uniform(0, 255, (classes, 6, 5, 3))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = prototypes[y].repeat(10, axis=1).repeat(10, axis=2)[:, :55, :47]
    x = np.clip(x + rng.normal(0, 40, x.shape), 0, 255).astype(np.float32)
    return x, y


@pytest.fixture(scope="session")
def tiny_net():
    """The lab's architecture with 10 classes, trained for a moment on `tiny_faces`.

    Trained rather than random: a random network gives one class for nearly every image,
    which would let comparisons of predictions pass for the wrong reasons.
    """
    import keras

    keras.utils.set_random_seed(0)
    model = labkit.build_badnet(10)
    x, y = tiny_faces(600)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x / 255, y, epochs=3, batch_size=32, verbose=0)
    return labkit.Net(model, scale=1 / 255, name="tiny")


def write_tiny_lab(root: Path, net, n: int = 40, seed: int = 0) -> labkit.Lab:
    """A lab folder (data/cl, data/bd, models/bd_net.h5) of `tiny_faces`, labelled by `net`.

    Clean labels are the net's own predictions on most images (so accuracy is high but not 100);
    poisoned labels are the target 0.
    """
    lab = labkit.lab("lab", root)
    for i, name in enumerate(LAB_FILES):
        x, _ = tiny_faces(n, seed + i)
        y = np.zeros(n, np.int64) if "bd" in name else net.predict(x)
        if "bd" not in name:
            y[:3] = (y[:3] + 1) % net.num_classes
        write_split(lab.split(name).path, x, y)
    labkit.save_model(net, lab.badnet_path)
    return lab


@pytest.fixture
def tiny_lab(tmp_path, tiny_net):
    return write_tiny_lab(tmp_path, tiny_net)


@pytest.hookimpl(wrapper=True)  # runs before every plugin's, xdist's included, which reads the marks
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (pyproject's addopts: `-n 2 --dist loadgroup`), everything that runs or
    writes the project's own demo lab (the notebooks under nbval, the tests using `demo_lab`) runs
    on one worker, in order; the other tests, each in a folder of its own, spread over both."""
    for item in items:
        if item.path.suffix == ".ipynb" or "demo_lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("project"))
    return (yield)


@pytest.fixture(scope="session")
def demo_lab():
    """The project's own demo lab (data/demo, models/demo), built once if it is not there yet.

    The notebooks use the same one, so a fresh checkout builds it once for the whole run.
    """
    from labkit import demo

    return demo.build_demo(ROOT, progress=False)
