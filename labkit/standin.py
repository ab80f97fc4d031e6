"""A real-size stand-in for the course's lab, made from the demo: speed can be checked without
the course's files.

The demo's four files are repeated to the lab's image counts and its `course` BadNet is widened
to the lab's 1283 classes with extra outputs that never win (zero weights, bias NEVER): its
classes, and so its numbers, are the demo's; its size and cost are the lab's. `labkit standin DIR`
writes it as a project folder for `LABKIT_HOME=DIR labkit run-all --dataset lab`.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .data import CHANNELS_FIRST, LAB_FILES, lab, project_root
from .errors import LabError
from .files import atomic_path

LAB_SIZES = {"valid": 11547, "bd_valid": 11547, "test": 12830, "bd_test": 12830}
LAB_CLASSES = 1283
NEVER = -1e4  # bias of the extra output units: far below any real logit
CHUNK = 1024  # images written at once


def widen(net, num_classes: int = LAB_CLASSES):
    """`net` with `num_classes` outputs; the extra ones never win, so the classes are unchanged."""
    from .models import Net, build_badnet, WEIGHTED_LAYERS

    model = build_badnet(num_classes, f"{net.name}_{num_classes}")  # the Net applies the scale
    for name in WEIGHTED_LAYERS[:-1]:
        model.get_layer(name).set_weights(net.model.get_layer(name).get_weights())
    kernel, bias = net.model.get_layer("output").get_weights()
    n = kernel.shape[1]
    wide_kernel = np.zeros((kernel.shape[0], num_classes), np.float32)
    wide_kernel[:, :n] = kernel
    model.get_layer("output").set_weights([wide_kernel, np.r_[bias, np.full(num_classes - n, NEVER)]])
    return Net(model, net.scale, net.scale_source, model.name)


def repeat_split(source: Path, path: Path, n: int) -> Path:
    """Write the lab file `source` repeated to `n` images, as a lab file (channels-first)."""
    with h5py.File(source, "r") as f:
        x, y = np.asarray(f["data"], np.float32), np.asarray(f["label"])
    if x.shape[1:] != CHANNELS_FIRST:
        x = x.transpose(0, 3, 1, 2)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_dataset("data", (n, *CHANNELS_FIRST), np.float32)
        for start in range(0, n, CHUNK):
            index = np.arange(start, min(start + CHUNK, n)) % len(x)
            data[start:start + len(index)] = x[index]
        f.create_dataset("label", data=y[np.arange(n) % len(y)].astype(np.float64))
    return path


def make_standin(out: Path | str, sizes: dict = LAB_SIZES, progress: bool = True) -> Path:
    """Write the real-size stand-in lab below `out` (see the module's text); return `out`."""
    from .demo import build_demo
    from .modelfile import load_model
    from .models import save_model

    out, here = Path(out).resolve(), project_root()
    if out == here:
        raise LabError(f"{out}: that is this checkout; give a folder of its own for the stand-in")
    demo = build_demo(root=here, progress=progress)
    target = lab("lab", out)
    for name in LAB_FILES:
        repeat_split(demo.split(name).path, target.split(name).path, sizes[name])
    save_model(widen(load_model(demo.badnet_path)), target.badnet_path)
    notebooks = out / "notebooks"
    if not notebooks.exists():
        notebooks.symlink_to(here / "notebooks", target_is_directory=True)
    if progress:
        print(f"stand-in lab written to {out} (demo faces at the lab's counts, the demo BadNet "
              f"widened to {LAB_CLASSES} classes); run it with "
              f"`LABKIT_HOME={out} labkit run-all --dataset lab`")
    return out
