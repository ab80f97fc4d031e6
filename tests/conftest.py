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


@pytest.fixture(scope="session")
def real():
    """../shared/real, holding the course's real BadNet files; the test skips where it is absent."""
    if not REAL.is_dir():
        pytest.skip("../shared/real is not here (it is only beside the checkout in CI)")
    return REAL


@pytest.fixture(scope="session")
def tiny_net():
    """The lab's architecture with 10 classes and seeded random weights."""
    import keras

    keras.utils.set_random_seed(0)
    return labkit.Net(labkit.build_badnet(10), name="tiny")


def write_tiny_lab(root: Path, net, n: int = 40, seed: int = 0) -> labkit.Lab:
    """A lab folder (data/cl, data/bd, models/bd_net.h5) of random faces, labelled by `net`.

    Clean labels are the net's own predictions on most images (so accuracy is high but not 100);
    poisoned labels are the target 0.
    """
    rng = np.random.default_rng(seed)
    lab = labkit.lab("lab", root)
    for name in LAB_FILES:
        x = rng.uniform(0, 255, (n, 55, 47, 3)).astype(np.float32)
        y = np.zeros(n, np.int64) if "bd" in name else net.predict(x)
        if "bd" not in name:
            y[:3] = (y[:3] + 1) % net.num_classes
        write_split(lab.split(name).path, x, y)
    labkit.save_model(net, lab.badnet_path)
    return lab


@pytest.fixture
def tiny_lab(tmp_path, tiny_net):
    return write_tiny_lab(tmp_path, tiny_net)
