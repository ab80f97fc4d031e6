"""GoodNet G: the BadNet B and a repaired B' together; where they disagree, G flags a backdoor.

For an input, G outputs the class B and B' both predict, or class N (= B's number of classes,
1283 in the lab: one past the last person) when they differ. A GoodNet is saved as ONE HDF5 file
holding both networks. Shown in 03_goodnet.ipynb.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np

from .data import BATCH
from .errors import LabError
from .files import atomic_path
from .models import Net, load_model, save_model

PARTS = ("badnet", "repaired")  # the two networks' groups in a GoodNet file
MARK = "labkit_goodnet"  # file attribute that says what the file is


def architecture(net: Net) -> list:
    """Each layer's type and weight shapes: two networks match when these are equal."""
    return [(type(layer).__name__, [tuple(w.shape) for w in layer.weights])
            for layer in net.model.layers if layer.weights]


def rule(badnet_classes, repaired_classes, backdoor_class: int) -> np.ndarray:
    """GoodNet's decision: B's class where B and B' predict the same class, else N (`backdoor_class`).

    Works on any shape (one image, a file, every step of a sweep); the one place the rule lives.
    """
    b = np.asarray(badnet_classes)
    return np.where(b == np.asarray(repaired_classes), b, backdoor_class)


class GoodNet:
    """G(B, B'): `predict(images)` gives B's class where B and B' agree, else N (backdoored).

    `num_classes` is N, B's number of real classes, so `labkit.metrics` checks labels as for B.
    """

    def __init__(self, badnet: Net, repaired, name: str = "goodnet"):
        repaired = getattr(repaired, "net", repaired)  # a `prune.Repaired` or a Net
        if repaired.num_classes != badnet.num_classes:
            raise LabError(f"B' ({repaired.name}) has {repaired.num_classes} classes but B "
                           f"({badnet.name}) has {badnet.num_classes}; B' must be B pruned")
        if architecture(repaired) != architecture(badnet):
            raise LabError(f"B' ({repaired.name}) does not have B's ({badnet.name}) architecture; "
                           "B' must be B with conv_3 channels zeroed")
        self.badnet, self.repaired, self.name, self.path = badnet, repaired, name, None

    @property
    def num_classes(self) -> int:
        return self.badnet.num_classes

    @property
    def backdoor_class(self) -> int:
        """N: the class G outputs for an input it flags as backdoored."""
        return self.badnet.num_classes

    def predict(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """Class of each raw 0..255 image: B's class where B and B' agree, else N."""
        return rule(self.badnet.predict(images, batch_size), self.repaired.predict(images, batch_size),
                    self.backdoor_class)


def save_goodnet(goodnet: GoodNet, path: Path | str, protect: tuple = ()) -> Path:
    """Save G as one HDF5 file: B and B' as Keras HDF5 models in groups `badnet` and `repaired`."""
    path = Path(path)
    if path.suffix != ".h5":
        raise LabError(f"{path}: save a GoodNet as .h5")
    with tempfile.TemporaryDirectory() as tmp, atomic_path(path, protect) as out:
        with h5py.File(out, "w") as f:
            f.attrs[MARK] = goodnet.name
            for part in PARTS:
                single = save_model(getattr(goodnet, part), Path(tmp) / f"{part}.h5")
                with h5py.File(single, "r") as src:
                    group = f.create_group(part)
                    group.attrs.update(src.attrs)
                    for key in src:
                        src.copy(src[key], group)
    return path


def load_goodnet(path: Path | str, trust: bool = False) -> GoodNet:
    """Load a GoodNet file written by `save_goodnet`; each network loads as `load_model` does."""
    path = Path(path)
    if not path.is_file():
        raise LabError(f"{path}: GoodNet file not found; save one with save_goodnet")
    if not h5py.is_hdf5(path):
        raise LabError(f"{path}: not an HDF5 file, so not a GoodNet saved by labkit")
    nets = {}
    with tempfile.TemporaryDirectory() as tmp, h5py.File(path, "r") as f:
        if MARK not in f.attrs or any(part not in f for part in PARTS):
            raise LabError(f"{path}: not a GoodNet file (it needs groups 'badnet' and 'repaired' "
                           "written by save_goodnet); load single models with load_model")
        for part in PARTS:
            single = Path(tmp) / f"{part}.h5"
            with h5py.File(single, "w") as dst:
                dst.attrs.update(f[part].attrs)
                for key in f[part]:
                    f.copy(f[part][key], dst)
            try:
                nets[part] = load_model(single, trust=trust)
            except LabError as err:
                raise LabError(str(err).replace(str(single), f"{path} ({part})")) from None
            nets[part].name, nets[part].path = part, None
        name = str(f.attrs[MARK])
    goodnet = GoodNet(nets["badnet"], nets["repaired"], name=name)
    goodnet.path = path
    return goodnet
