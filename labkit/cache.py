"""B run on a data file, and what runs share: B's `pool_3` activations and classes per file.

`run` and `activations` read a file batch by batch through a network; `metrics`, `prune` and
`sweep` build on them, never the other way round. `features` stores B's `pool_3`, classes, labels
and channel means once per run in `lab.cache_dir`, named and checked by the SHA-256 of the model
and data files and written atomically; `predict` evaluates B, a GoodNet or a B' that is B pruned
from them, running only the layers after `pool_3` (exact: LAB.md). docs/design.md has the details.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import BATCH, IMAGE_SHAPE, Split
from .errors import LabError
from .files import atomic_path, file_sha256
from .goodnet import GoodNet, rule
from .head import Head, head_problem, masking_problem
from .models import CONV, POOL, Net, zeroed_channels

FEATURE_BATCH = 128  # images per forward pass: small batches keep conv_1's output in the cache
_hashes: dict = {}  # (file identity, size, mtime) -> SHA-256: each file is hashed once per process


@dataclass(frozen=True)
class Features:
    """B's `pool_3` activations (images, 5, 4, 60) on one data file, its classes, the labels and
    each channel's mean activation (over images and positions)."""

    pool_3: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    means: np.ndarray


def content_hash(path: Path | str) -> str:
    """SHA-256 of a file, remembered while the file's size and modification time stay the same."""
    info = os.stat(path)
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = file_sha256(path)
    return _hashes[key]


def check_labels(split: Split, labels: np.ndarray, num_classes: int) -> None:
    """Refuse labels outside the model's classes 0..num_classes-1."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise LabError(f"{split.path}: label {labels[bad][0]} is outside the model's "
                       f"{num_classes} classes (0..{num_classes - 1}); is this data for this model?")


def run(net, split: Split, batch_size: int = BATCH, progress: bool = False):
    """Predicted classes and true labels of every image of `split`, read batch by batch.

    `net` is anything with `predict(images)` and `num_classes` (a Net, a GoodNet).
    """
    from tqdm.auto import tqdm

    preds, labels = [], []
    with tqdm(total=len(split), desc=f"{net.name} on {split.name}", unit="img", disable=not progress,
              leave=False) as bar:
        for x, y in split.batches(batch_size):
            check_labels(split, y, net.num_classes)
            preds.append(net.predict(x))
            labels.append(y)
            bar.update(len(y))
    return np.concatenate(preds), np.concatenate(labels)


def feature_fn(net: Net, layer: str = POOL):
    """A TF function: raw 0..255 images -> the activations of `layer` (the sub-model to it)."""
    import keras
    import tensorflow as tf

    try:
        sub = keras.Model(net.model.input, net.model.get_layer(layer).output)
    except ValueError:
        raise LabError(f"{net.name}: the model has no layer {layer!r}") from None
    spec = tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32)
    return tf.function(lambda x: sub(x * net.scale, training=False), input_signature=[spec])


def activations(net: Net, split: Split, fn, out: np.ndarray | None = None,
                batch_size: int = BATCH, bar=None):
    """Run `fn` (see `feature_fn`) over `split` batch by batch, storing the activations in `out`.

    Returns the labels and each channel's mean activation (over images and positions).
    """
    labels, total, start = [], 0.0, 0
    for x, y in split.batches(batch_size):
        check_labels(split, y, net.num_classes)
        for i in range(0, len(x), FEATURE_BATCH):
            a = fn(x[i:i + FEATURE_BATCH]).numpy()
            total = total + a.reshape(-1, a.shape[-1]).sum(axis=0, dtype=np.float64)
            if out is not None:
                out[start:start + len(a)] = a
            start += len(a)
        labels.append(y)
        if bar is not None:
            bar.update(len(y))
    return np.concatenate(labels), total / (start * np.prod(a.shape[1:-1]))


def features(net, split: Split, folder: Path | str | None, progress: bool = False) -> Features:
    """B's `Features` on `split`, read from `folder` if stored there for these very files, else
    computed (and stored, unless `folder` is None or the model has no file)."""
    if folder is None or net.path is None:
        return _compute(net, split, progress)
    keys = content_hash(net.path), content_hash(split.path)
    path = Path(folder) / f"{split.path.stem}-{Path(net.path).stem}-{keys[0][:12]}-{keys[1][:12]}.npz"
    try:
        with np.load(path) as f:
            if (str(f["model_sha256"]), str(f["data_sha256"])) == keys:
                return Features(f["pool_3"], f["classes"], f["labels"], f["means"])
    except (OSError, KeyError, ValueError):
        pass  # missing, removed by another run, or damaged: compute it again
    found = _compute(net, split, progress)
    with atomic_path(path) as tmp:
        np.savez(tmp, model_sha256=keys[0], data_sha256=keys[1], **found.__dict__)
    for old in path.parent.glob(f"{split.path.stem}-{Path(net.path).stem}-*.npz"):
        if old != path:
            old.unlink(missing_ok=True)  # made for another version of one of the two files
    return found


def _compute(net, split: Split, progress: bool) -> Features:
    from tqdm.auto import tqdm

    acts = np.empty((len(split), *net.model.get_layer(POOL).output.shape[1:]), np.float32)
    with tqdm(total=len(acts), desc=f"{POOL} on {split.name}", unit="img", disable=not progress,
              leave=False) as bar:
        labels, means = activations(net, split, feature_fn(net, POOL), acts, bar=bar)
    # the lab's layers after pool_3 run on the stored activations; another network runs again
    classes = run(net, split)[0] if head_problem(net.model) else Head(net).predict(acts)
    return Features(acts, classes, labels, means)


def pruned_channels(badnet, net) -> np.ndarray | None:
    """The `conv_3` channels `net` has zeroed if it is exactly `badnet` with those channels
    zeroed (every other weight equal, same input scale); otherwise None."""
    if net.scale != badnet.scale or masking_problem(badnet):
        return None
    try:
        layers = [(a.name, a.get_weights(), net.model.get_layer(a.name).get_weights())
                  for a in badnet.model.layers if a.weights]
    except ValueError:  # a layer B has is missing
        return None
    zeroed = None
    for name, mine, theirs in layers:
        if len(mine) != len(theirs) or any(m.shape != t.shape for m, t in zip(mine, theirs)):
            return None
        if name == CONV:
            zeroed = zeroed_channels(net)
            mine = [w.copy() for w in mine]
            for w in mine:
                w[..., zeroed] = 0
        if not all(np.array_equal(m, t) for m, t in zip(mine, theirs)):
            return None
    return zeroed


def predict(net, split: Split, folder: Path | str | None, badnet=None, progress: bool = False):
    """Classes and labels of `net` on `split`, as `labkit.metrics.predict` gives them, from what
    the run has stored in `folder`: B's own, a GoodNet's (B's and B''s through `labkit.goodnet.rule`), or a
    B' that is `badnet` pruned (from B's `pool_3`); any other network is run as usual."""
    if isinstance(net, GoodNet):
        b, labels = predict(net.badnet, split, folder, progress=progress)
        return rule(b, predict(net.repaired, split, folder, net.badnet)[0], net.backdoor_class), labels
    if badnet is None or net is badnet:
        found = features(net, split, folder, progress)
        check_labels(split, found.labels, net.num_classes)
        return found.classes, found.labels
    pruned = pruned_channels(badnet, net)
    if pruned is None:
        return run(net, split, progress=progress)
    found = features(badnet, split, folder, progress)
    classes = found.classes.copy()  # an image with the pruned channels all 0 keeps B's class
    changed = np.flatnonzero(found.pool_3[..., pruned].any(axis=(1, 2, 3)))
    classes[changed] = Head(badnet).predict(found.pool_3[changed], pruned)
    return classes, found.labels
