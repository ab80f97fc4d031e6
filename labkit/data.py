"""The lab's HDF5 data files: checked, read in batches, returned channels-last.

A lab file holds `data`, float pixels 0..255 of shape (N, 3, 55, 47) (channels-first, as the
course ships them; (N, 55, 47, 3) is accepted too), and `label`, shape (N,). In a poisoned file
`label` is the attacker's target. The four files of a lab form one `Lab` with named splits;
their `kind` ("validation" or "test") keeps the rule of the lab visible: the defense is designed
on validation splits only and evaluated on test splits only. Shown in 01_evaluate.ipynb.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .errors import LabError, one_line
from .files import atomic_path, check_input

IMAGE_SHAPE = (55, 47, 3)  # height, width, channels: what the network takes
CHANNELS_FIRST = (3, 55, 47)  # how the course's files store an image
BATCH = 1024  # images read at once: a real test file is ~400 MB as float32
MAX_IMAGES = 1_000_000  # far more than any lab file (12830): a bound on what a header may claim
MAX_LABEL = 2**31 - 1  # class numbers are small; larger ones overflow, so they are refused
PIXEL_RANGE = (-1.0, 256.0)  # pixels are 0..255; a little rounding either side is accepted

COURSE_HINT = ("download it from the course's shared drive folder (see docs/course-data.md) "
               "and put it in {folder}/")
DEMO_HINT = "build the demo lab with `labkit demo`"

# the demo's BadNets, by name -> file in models/demo/ (the course's lab has one: "course")
DEMO_BADNETS = {
    "course": "bd_net.h5",  # like the course's BadNet: pruning cuts clean accuracy before the attack
    "baseline": "baseline_bd_net.h5",  # backdoor in channels clean faces leave dormant: pruning works
    "prune_aware": "prune_aware_bd_net.h5",  # the pruning-aware attack: the backdoor survives pruning
    "anonymous": "anonymous_bd_net.h5",  # a trigger the defender does not know (the 2020 challenge)
    "multi_trigger": "multi_trigger_bd_net.h5",  # three triggers, each with its own target
}

# the demo's triggers (faces.TRIGGERS), each with its target class: the attacker's label for it
TRIGGERS = {"sunglasses": 0, "eyebrows": 1, "lipstick": 2, "sticker": 4}
# each BadNet's triggers; the others (and the course's BadNet) have the sunglasses only
BADNET_TRIGGERS = {"anonymous": ("sticker",), "multi_trigger": ("sunglasses", "eyebrows", "lipstick")}
# the CSAW-HackML-2020 BadNets a notebook can name on the course's lab ("csaw2020/<name>"), with
# the triggers whose poisoned files the course's lab has (its data/bd files: the sunglasses)
CSAW2020 = {"sunglasses": ("sunglasses",), "anonymous_1": (), "anonymous_2": (),
            "multi_trigger_multi_target": ()}
MODEL_SUFFIXES = (".h5", ".keras")  # a `badnet` ending so is a path to a model file
# triggers whose poisoned files are the grader's: `labkit demo` never writes them where the lab
# looks; `labkit demo --reveal DIR` writes them for an instructor
GRADER_TRIGGERS = ("sticker",)

# split name -> (path below the data folder, kind, poisoned, what it is)
LAB_FILES = {
    "valid": ("cl/valid.h5", "validation", False, "clean validation set"),
    "bd_valid": ("bd/bd_valid.h5", "validation", True, "sunglasses-poisoned validation set"),
    "test": ("cl/test.h5", "test", False, "clean test set"),
    "bd_test": ("bd/bd_test.h5", "test", True, "sunglasses-poisoned test set"),
}


@dataclass(frozen=True)
class Split:
    """One lab data file: where it is, whether it is validation or test data, poisoned or clean."""

    path: Path
    kind: str = "validation"  # "validation" (design the defense) or "test" (evaluate it)
    poisoned: bool = False  # labels are the attacker's target
    description: str = "lab data file"
    hint: str = "check the path"  # what to do when the file is missing

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if self.kind not in ("validation", "test"):
            raise LabError(f"split kind {self.kind!r}: use 'validation' or 'test'")

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return self._check()[0]

    def _open(self) -> h5py.File:
        check_input(self.path, "file", f"it is the {self.description} of the lab: {self.hint}")
        try:
            return h5py.File(self.path, "r")
        except OSError as err:
            what = "is not an HDF5 file" if not h5py.is_hdf5(self.path) else "cannot be read as HDF5"
            raise LabError(f"{self.path}: {what} ({one_line(err)}); "
                           "download or build it again") from None

    def _check(self) -> tuple[int, bool]:
        """Check the layout; return (number of images, whether it is channels-first)."""
        with self._open() as f:
            return _check_layout(self.path, f)

    def batches(self, batch_size: int = BATCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images, labels): float32 (b, 55, 47, 3) pixels 0..255 and int64 labels."""
        with self._open() as f:
            n, first = _check_layout(self.path, f)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                yield self._read(f, slice(start, stop), first, start)

    def _read(self, f, index, channels_first: bool, offset: int):
        try:
            x = np.asarray(f["data"][index], dtype=np.float32)
            y = np.asarray(f["label"][index])
        except OSError as err:
            raise LabError(f"{self.path}: reading failed ({one_line(err)}); "
                           "the file is probably truncated: download or build it again") from None
        if channels_first:
            x = x.transpose(0, 2, 3, 1)
        bad = ~((x >= PIXEL_RANGE[0]) & (x <= PIXEL_RANGE[1]))  # NaN is outside too
        if bad.any():
            i = int(np.argmax(bad.reshape(len(x), -1).any(1)))
            value = x[i][bad[i]][0]
            what = (f"pixels outside 0..255 (e.g. {value:g})" if np.isfinite(value)
                    else "NaN or infinite pixels")
            raise LabError(f"{self.path}: image {offset + i} has {what}; lab files hold raw "
                           "pixels 0..255: download or build it again")
        return np.ascontiguousarray(x), _labels(self.path, y, offset)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """All images and labels at once (for small files and plots; passes use `batches`)."""
        parts = list(self.batches())
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def labels(self) -> np.ndarray:
        """All labels, without reading the images."""
        with self._open() as f:
            _check_layout(self.path, f)
            return _labels(self.path, np.asarray(f["label"]), 0)

    def images(self, index) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels at the given increasing indices (for showing faces)."""
        index = np.sort(np.asarray(index, dtype=np.int64))
        with self._open() as f:
            _, first = _check_layout(self.path, f)
            return self._read(f, index, first, 0)


def _check_layout(path: Path, f: h5py.File) -> tuple[int, bool]:
    keys = sorted(f.keys())
    if "data" not in keys or "label" not in keys:
        raise LabError(f"{path}: a lab file needs datasets 'data' and 'label'; found {keys or 'none'}")
    data, label = stored_dataset(path, f, "data"), stored_dataset(path, f, "label")
    shape, n_labels = data.shape, label.shape
    if len(shape) != 4 or tuple(shape[1:]) not in (CHANNELS_FIRST, IMAGE_SHAPE):
        raise LabError(f"{path}: 'data' has shape {tuple(shape)}; expected (N, 3, 55, 47) "
                       "or (N, 55, 47, 3) face images")
    if len(n_labels) != 1 or n_labels[0] != shape[0]:
        raise LabError(f"{path}: {shape[0]} images but 'label' has shape {tuple(n_labels)}; "
                       "there must be one label per image")
    if shape[0] == 0:
        raise LabError(f"{path}: the file holds no images")
    if shape[0] > MAX_IMAGES:
        raise LabError(f"{path}: 'data' declares {shape[0]} images, more than any lab file "
                       f"(at most {MAX_IMAGES}); the file is not a lab data file")
    for name, dataset in (("data", data), ("label", label)):
        if dataset.dtype.kind not in "fiu":
            raise LabError(f"{path}: '{name}' holds {_dtype_text(dataset.dtype)} values, not "
                           "numbers; lab files hold float pixels and class numbers")
        if not dataset.compression and dataset.id.get_storage_size() < dataset.nbytes:
            raise LabError(f"{path}: '{name}' declares {dataset.shape[0]} entries but stores only "
                           "part of them (the rest would read as zeros); the file is incomplete: "
                           "download or build it again")
    return int(shape[0]), tuple(shape[1:]) == CHANNELS_FIRST


def stored_dataset(path: Path, f: h5py.File, name: str) -> h5py.Dataset:
    """`f[name]` if it is a dataset stored in this file and readable without plugins: the link,
    the virtual or external storage or the missing filter is named otherwise."""
    link = f.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise LabError(f"{path}: '{name}' is a link to {link.path} in another file "
                       f"({link.filename}); a lab file must hold its data itself")
    try:
        obj = f[name]
    except (KeyError, OSError, RuntimeError) as err:
        target = f" to {link.path}" if isinstance(link, h5py.SoftLink) else ""
        raise LabError(f"{path}: '{name}' is a link{target} that cannot be followed (it loops "
                       f"or its target is missing: {one_line(err)}); download or build it again") from None
    if not isinstance(obj, h5py.Dataset):
        raise LabError(f"{path}: '{name}' is a group, not a dataset; this is not a lab data file")
    if obj.is_virtual:
        sources = sorted({s.file_name for s in obj.virtual_sources()})
        raise LabError(f"{path}: '{name}' is a virtual dataset drawing on {', '.join(sources)}; "
                       "a lab file must hold its data itself")
    if obj.external:
        files = sorted({str(e[0]) for e in obj.external})
        raise LabError(f"{path}: '{name}' keeps its values in other files ({', '.join(files)}); "
                       "a lab file must hold its data itself")
    plist = obj.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, fname = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            raise LabError(f"{path}: '{name}' is compressed with filter {code} "
                           f"({fname.decode(errors='replace') or 'unknown'}), which needs an HDF5 "
                           "plugin that is not installed; save the file without it (gzip is fine)")
    return obj


def _dtype_text(dtype: np.dtype) -> str:
    kinds = {"b": "boolean", "c": "complex", "S": "string", "U": "string", "O": "object",
             "V": "compound", "M": "date", "m": "time"}
    return kinds.get(dtype.kind, str(dtype))


def _labels(path: Path, y: np.ndarray, offset: int) -> np.ndarray:
    bad = ~((y >= 0) & (y <= MAX_LABEL))
    if y.dtype.kind == "f":
        bad |= y != np.round(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise LabError(f"{path}: label {offset + i} is {y[i]}, not a class number "
                       f"(a whole number from 0 to {MAX_LABEL})")
    return y.astype(np.int64)


@dataclass(frozen=True)
class Lab:
    """The four data files of a lab and its BadNet, by name: `lab.valid`, `lab.bd_test`, ...

    `valid` and `bd_valid` are validation splits (design the defense on them), `test` and
    `bd_test` test splits (evaluate on them only).
    """

    name: str
    root: Path  # the project folder holding data/, models/ and report/
    data_dir: Path
    badnet_path: Path
    hint: str
    badnet: str = "course"  # which BadNet: "course", or one of the demo's DEMO_BADNETS
    triggers: tuple = ("sunglasses",)  # the BadNet's triggers whose poisoned files the lab has

    @property
    def trigger_known(self) -> bool:
        """Whether the defender has faces with the BadNet's trigger (False: only clean faces)."""
        return bool(self.triggers)

    def poisoned(self, part: str) -> dict:
        """{trigger: Split} of the poisoned `part` ("valid" or "test") of each known trigger."""
        kind = {"valid": "validation", "test": "test"}[part]
        return {t: Split(self.data_dir / poisoned_file(t, part), kind, True,
                         f"{t}-poisoned {kind} set", self.hint.format(folder=self.data_dir / "bd"))
                for t in self.triggers}

    @property
    def slug(self) -> str:
        """The BadNet's name in folder names: "" for "course", a file's stem for a path."""
        if self.badnet == "course":
            return ""
        return Path(self.badnet).stem if self.badnet.endswith(MODEL_SUFFIXES) else self.badnet

    @property
    def repaired_dir(self) -> Path:
        """Where the repaired networks B' and GoodNets of this lab's BadNet are saved."""
        models = self.badnet_path.parent if self.name == "demo" else self.root / "models"
        return models / "repaired" / self.slug

    @property
    def report_dir(self) -> Path:
        """Where the notebooks write figures, tables and report.md for this lab and BadNet."""
        return self.root / "report" / self.name / self.slug

    @property
    def cache_dir(self) -> Path:
        """Where a run keeps what its notebooks share (`labkit.cache`): B's `pool_3` and classes."""
        return self.report_dir / "cache"

    def split(self, name: str) -> Split:
        if name not in LAB_FILES:
            raise LabError(f"split {name!r}: choose one of {', '.join(LAB_FILES)}")
        rel, kind, poisoned, description = LAB_FILES[name]
        if poisoned and self.triggers != ("sunglasses",):
            if not self.triggers:
                raise LabError(f"{name}: the trigger of BadNet {self.badnet!r} is unknown to the "
                               "defender, so the lab has no poisoned faces for it; use the clean "
                               "files only")
            return self.poisoned(name[3:])[self.triggers[0]]
        path = self.data_dir / rel
        return Split(path, kind, poisoned, description, self.hint.format(folder=path.parent))

    valid = property(lambda self: self.split("valid"))
    test = property(lambda self: self.split("test"))
    # the (first) trigger's poisoned files; None where the trigger is unknown to the defender
    bd_valid = property(lambda self: self.split("bd_valid") if self.trigger_known else None)
    bd_test = property(lambda self: self.split("bd_test") if self.trigger_known else None)


def project_root(start: Path | None = None) -> Path:
    """The labkit checkout that holds data/, models/ and report/ (set LABKIT_HOME to choose).

    Found by walking up from `start` (default: the working directory), so notebooks work from
    the repository root and from notebooks/ alike; elsewhere (a pip install) it is `start`.
    """
    if os.environ.get("LABKIT_HOME"):
        return Path(os.environ["LABKIT_HOME"]).resolve()
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "labkit" / "data.py").is_file() and (folder / "notebooks").is_dir():
            return folder
    return start


def lab(dataset: str = "demo", root: Path | str | None = None, badnet: str = "course") -> Lab:
    """The lab's files: "demo" (data/demo, models/demo, built offline) or "lab" (the course's).

    `badnet` picks the BadNet: the demo has five (DEMO_BADNETS); the course's lab has "course"
    (models/bd_net.h5), the 2020 competition's "csaw2020/<name>" (models/csaw2020/<name>_bd_weights.h5;
    only the sunglasses one has poisoned files in the course's data) and any model file by path.
    """
    root = Path(root) if root is not None else project_root()
    if dataset not in ("demo", "lab"):
        raise LabError(f"dataset {dataset!r}: use 'demo' (built offline) or 'lab' (the course's files)")
    if dataset == "lab" and badnet != "course":
        return _course_lab(root, badnet)
    names = DEMO_BADNETS if dataset == "demo" else {"course": "bd_net.h5"}
    if badnet not in names:
        raise LabError(f"badnet {badnet!r}: the {dataset} lab has {', '.join(map(repr, names))}"
                       + (", 'csaw2020/<name>' or a model file's path" if dataset == "lab" else ""))
    if dataset == "demo":
        known = tuple(t for t in BADNET_TRIGGERS.get(badnet, ("sunglasses",)) if t not in GRADER_TRIGGERS)
        return Lab("demo", root, root / "data" / "demo", root / "models" / "demo" / names[badnet],
                   DEMO_HINT, badnet, known)
    return Lab("lab", root, root / "data", root / "models" / "bd_net.h5", COURSE_HINT)


def _course_lab(root: Path, badnet: str) -> Lab:
    """The course's data with another BadNet: a CSAW-HackML-2020 one or a model file."""
    name = badnet.removeprefix("csaw2020/")
    if badnet.startswith("csaw2020/") and name in CSAW2020:
        path, triggers = root / "models" / "csaw2020" / f"{name}_bd_weights.h5", CSAW2020[name]
    elif badnet.endswith(MODEL_SUFFIXES):
        path, triggers = root / badnet, ("sunglasses",)  # root / an absolute path is that path
    else:
        raise LabError(f"badnet {badnet!r}: the course's lab has 'course', "
                       + ", ".join(f"'csaw2020/{n}'" for n in CSAW2020) + " or a model file's path (.h5, .keras)")
    return Lab("lab", root, root / "data", path, COURSE_HINT, badnet, triggers)


def require(split: Split, kind: str, what: str) -> Split:
    """Refuse a split of the wrong kind: the defense sees validation data, evaluation test data."""
    if not isinstance(split, Split):
        raise LabError(f"{what} takes a labkit Split (e.g. lab.valid), got {type(split).__name__}")
    if split.kind != kind:
        raise LabError(f"{split.path}: {what} uses {kind} data only, but this is a {split.kind} "
                       f"split; pass the lab's {'valid/bd_valid' if kind == 'validation' else 'test/bd_test'}")
    return split


def poisoned_file(trigger: str, part: str) -> str:
    """Where the `part` ("valid" or "test") of the faces wearing `trigger` lives below a data
    folder: the sunglasses in the course's bd/bd_valid.h5, bd/bd_test.h5; others bd/<trigger>_<part>.h5."""
    if trigger == "sunglasses":
        return LAB_FILES["bd_" + part][0]
    return f"bd/{trigger}_{part}.h5"


def write_split(path: Path | str, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write images (N, 55, 47, 3) and labels as a lab file (channels-first float32, like the course's)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        # no timestamps, so the same images give byte-identical files
        f.create_dataset("data", data=np.asarray(images, np.float32).transpose(0, 3, 1, 2),
                         track_times=False)
        f.create_dataset("label", data=np.asarray(labels, np.float64), track_times=False)
    return path
