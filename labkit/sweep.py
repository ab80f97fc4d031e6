"""The fast exact pruning sweep: B_k's predictions for every number k of pruned channels, and the table.

Because `conv_3` uses ReLU and `pool_3` max-pools it directly, a zeroed `conv_3` channel is exactly
0 in `pool_3`. So the sweep computes `pool_3` once per data file and, for every k, runs only the
layers after `pool_3` on the stored activations with the pruned channels set to 0: the pruned
network's output, in seconds instead of an hour. 02_prune.ipynb checks it against the plain loop.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .cache import check_labels, features
from .data import Split, require
from .errors import LabError
from .files import atomic_path
from .goodnet import rule
from .head import Head, masking_problem
from .metrics import trigger_column
from .models import CONV, Net, copy_net
from .prune import pruning_order, zero_channels


# the table's measured columns: (column, data file, what is counted: B_k correct, GoodNet
# G(B, B_k) correct, G flags the input as backdoored)
COLUMNS = [("valid_accuracy", "valid", "correct"),
           ("valid_attack_success_rate", "bd_valid", "correct"),
           ("test_accuracy", "test", "correct"),
           ("test_attack_success_rate", "bd_test", "correct"),
           ("goodnet_accuracy", "test", "goodnet_correct"),
           ("goodnet_attack_success_rate", "bd_test", "goodnet_correct"),
           ("goodnet_flagged_clean", "test", "goodnet_flagged"),
           ("goodnet_flagged_poisoned", "bd_test", "goodnet_flagged")]


@dataclass
class Sweep:
    """Every step of a pruning sweep: the order, B_k's classes on each data file, and the table.

    `classes[name]` has shape (steps + 1, images): row k is B_k's classes (k channels pruned) on
    data file `name` ("valid", "bd_valid", "test", "bd_test"; with several triggers one poisoned
    file per trigger, "bd_valid:eyebrows", ...). `exact_masking` is False when the model did not
    allow the fast masked computation and each pruned network was run instead.
    """

    order: np.ndarray
    mean_activations: np.ndarray
    badnet: Net
    splits: dict  # name -> Split
    classes: dict  # name -> int array (steps + 1, images)
    labels: dict  # name -> the file's labels (the target class in a poisoned file)
    exact_masking: bool = True
    head_images: int = 0  # images run through fc_2 and the output layer, over all steps (masking)

    @property
    def steps(self) -> int:
        return len(self.order)

    @property
    def triggers(self) -> list:
        """The triggers measured one by one (several poisoned files each), else []."""
        return list(dict.fromkeys(n.split(":")[1] for n in self.classes if ":" in n))

    def predictions(self, name: str, k: int) -> np.ndarray:
        """B_k's predicted classes (k channels pruned) on data file `name`, e.g. "valid"."""
        if name not in self.classes:
            raise LabError(f"data file {name!r}: this sweep has {', '.join(self.classes)}")
        if not 0 <= int(k) <= self.steps:
            raise LabError(f"step {k}: choose 0..{self.steps} pruned channels")
        return self.classes[name][int(k)].astype(np.int64)

    def goodnet(self, name: str) -> np.ndarray:
        """G(B, B_k)'s classes on `name` at every step k (`labkit.goodnet.rule`), (steps + 1, images)."""
        p = self.classes[name]
        return rule(p[0], p, self.badnet.num_classes)

    @cached_property
    def table(self):
        """One row per number k of pruned channels (pandas); percentages in percentage points."""
        import pandas as pd

        k = np.arange(self.steps + 1)
        cols = {"pruned": k, "fraction_pruned": k / self.steps, "channel": np.r_[-1, self.order],
                "mean_activation": np.r_[np.nan, self.mean_activations[self.order]]}
        for column, name, what in COLUMNS:
            parts = {t: f"{name}:{t}" for t in self.triggers if f"{name}:{t}" in self.classes}
            if name in self.classes:
                cols[column] = 100.0 * self._hits(name, what).mean(axis=1)
            elif parts:  # every trigger's poisoned faces together, then each trigger's
                hits = {t: self._hits(part, what) for t, part in parts.items()}
                cols[column] = 100.0 * np.concatenate(list(hits.values()), axis=1).mean(axis=1)
                cols.update({trigger_column(column, t): 100.0 * h.mean(axis=1) for t, h in hits.items()})
        return pd.DataFrame(cols)

    def _hits(self, name: str, what: str) -> np.ndarray:
        y, n = self.labels[name], self.badnet.num_classes
        return (self.classes[name] == y if what == "correct" else
                self.goodnet(name) == y if what == "goodnet_correct" else self.goodnet(name) == n)

    def to_csv(self, path: Path | str, protect: tuple = ()) -> Path:
        """Write the table as CSV, atomically: percentages to 2 decimals, their columns named `*_pct`."""
        measured = {column for column, _, _ in COLUMNS}
        percent = [c for c in self.table if c.split(":")[0] in measured]
        table = self.table.round({"fraction_pruned": 4, "mean_activation": 6, **dict.fromkeys(percent, 2)})
        with atomic_path(path, protect) as tmp:
            table.rename(columns={c: c.replace(":", "_pct:") if ":" in c else f"{c}_pct"
                                  for c in percent}).to_csv(tmp, index=False)
        return Path(path)


def sweep(badnet: Net, valid: Split, bd_valid: Split | None = None, test: Split | None = None,
          bd_test: Split | None = None, order: str = "increasing", seed: int = 0,
          progress: bool = False, cache: Path | str | None = None) -> Sweep:
    """Prune `conv_3` channels one by one (order: mean activations on `valid`), measuring each step.

    `valid`/`bd_valid` must be validation splits (the defense is designed on them) and
    `test`/`bd_test` test splits (used for the evaluation columns only). A poisoned file may be
    given per trigger, {trigger: Split} (`lab.poisoned("valid")`): with several, the table's attack
    columns count them all together and each trigger gets its own column ("...:eyebrows"). One sweep serves every
    threshold: see `labkit.prune.repair`. `cache` (e.g. `lab.cache_dir`) is where B's `pool_3`
    activations of this run are kept (`labkit.cache`), so sweeps share one forward pass.
    """
    from tqdm.auto import tqdm

    splits = {"valid": require(valid, "validation", "the pruning sweep (valid)")}
    for name, split, kind in (("bd_valid", bd_valid, "validation"), ("test", test, "test"),
                              ("bd_test", bd_test, "test")):
        if isinstance(split, dict) and len(split) == 1:
            split = next(iter(split.values()))
        if isinstance(split, dict):
            splits.update({trigger_column(name, t): require(s, kind, f"the pruning sweep ({name}, {t})")
                           for t, s in split.items()})
        elif split is not None:
            splits[name] = require(split, kind, f"the pruning sweep ({name})")
    problem = masking_problem(badnet)
    if problem:
        warnings.warn(f"{badnet.name}: {problem}; running each pruned network instead of masking "
                      "(exact, but slow)", stacklevel=2)
    # pool_3 of every file for masking, else of the validation file only (for the order)
    acts, labels, means, sizes = _stacked_activations(
        badnet, {"valid": valid} if problem else splits, cache, progress)
    for name, split in splits.items():
        if name not in labels:
            labels[name] = split.labels()
            check_labels(split, labels[name], badnet.num_classes)
    chosen = pruning_order(means["valid"], order, seed)
    if problem:
        with tqdm(total=len(chosen), desc="pruning steps", unit="step", disable=not progress,
                  leave=False) as bar:
            classes, work = _zeroed_predictions(badnet, splits, chosen, bar), 0
    else:
        with tqdm(total=len(acts), desc=f"{len(chosen)} pruning steps", unit="img",
                  disable=not progress, leave=False) as bar:
            (flat, work), classes, start = Head(badnet).sweep(acts, chosen, bar), {}, 0
        for name, n in sizes.items():
            classes[name], start = flat[:, start:start + n], start + n
    return Sweep(chosen, means["valid"], badnet, splits, classes, labels, not problem, work)


def _stacked_activations(net: Net, splits: dict, cache, progress: bool):
    """`pool_3` of all files' images in one array (`labkit.cache`), each file's labels, channel
    means, size."""
    found = {name: features(net, split, cache, progress) for name, split in splits.items()}
    acts = np.concatenate([f.pool_3 for f in found.values()])
    return (acts, {n: f.labels for n, f in found.items()}, {n: f.means for n, f in found.items()},
            {n: len(f.labels) for n, f in found.items()})


def _zeroed_predictions(net: Net, splits: dict, order: np.ndarray, bar=None) -> dict:
    """The exact slow way: zero the channels in a copy of B, step by step, and run every file."""
    pruned, weights = copy_net(net), net.model.get_layer(CONV).get_weights()
    preds = {name: np.empty((len(order) + 1, len(s)), np.int32) for name, s in splits.items()}
    for k in range(len(order) + 1):
        zero_channels(pruned, weights, order[:k])
        for name, split in splits.items():
            preds[name][k] = np.concatenate([pruned.predict(x) for x, _ in split.batches()])
        if bar is not None and k:
            bar.update(1)
    return preds
