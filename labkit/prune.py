"""The pruning defense, step by step: mean activations, the order, zeroing channels, the rule for B'.

Pruning channel c of `conv_3` zeroes its kernel[:, :, :, c] and bias[c]; the architecture is
unchanged. Channels go in increasing order of their mean `pool_3` activation on clean validation
faces, and B' for a threshold X is the first pruned network whose validation accuracy is at least
X percentage points below B's. Shown in 01_evaluate.ipynb and 02_prune.ipynb; `labkit.sweep`
measures every step fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import activations, feature_fn, features
from .data import BATCH, Split
from .errors import LabError
from .models import CONV, POOL, Net, copy_net

ORDERS = ("increasing", "decreasing", "random")  # the method, then two ablations
TOLERANCE = 1e-9  # accuracies are floats: a drop of 1.9999999999 points counts as 2
RULE = ("B' is the model at the first step whose validation accuracy is at least X percentage "
        "points below B's")


def mean_activations(net: Net, split: Split, layer: str = POOL, batch_size: int = BATCH,
                     progress: bool = False, cache: Path | str | None = None) -> np.ndarray:
    """Mean activation of each channel of `layer` over the images of `split` (step 1 of the method).

    Images are read batch by batch; the network sees them multiplied by `net.scale`. With
    `cache` (e.g. `lab.cache_dir`), `pool_3`'s are those the run has stored (`labkit.cache`).
    """
    from tqdm.auto import tqdm

    if cache is not None and layer == POOL and batch_size == BATCH:
        return features(net, split, cache, progress).means

    with tqdm(total=len(split), desc=f"{layer} on {split.name}", unit="img",
              disable=not progress, leave=False) as bar:
        return activations(net, split, feature_fn(net, layer), None, batch_size, bar)[1]


def pruning_order(mean_acts, order: str = "increasing", seed: int = 0) -> np.ndarray:
    """Channel indices in the order they are pruned.

    "increasing": least active first (the method: dormant channels may hide the backdoor);
    "decreasing": most active first (an ablation, the common mistake); "random": an ablation,
    a random permutation drawn with `seed`. Ties keep channel order.
    """
    mean_acts = np.asarray(mean_acts, np.float64)
    if order == "increasing":
        return np.argsort(mean_acts, kind="stable")
    if order == "decreasing":
        return np.argsort(-mean_acts, kind="stable")
    if order == "random":
        return np.random.default_rng(seed).permutation(len(mean_acts))
    raise LabError(f"pruning order {order!r}: use 'increasing' (the method), 'decreasing' or "
                   "'random' (ablations)")


def prune(net: Net, channels) -> Net:
    """A new Net with the given `conv_3` channels zeroed (kernel[:, :, :, c] and bias[c]).

    The architecture is unchanged and `net` itself is left alone.
    """
    channels = np.asarray(channels, dtype=np.int64).reshape(-1)
    weights = net.model.get_layer(CONV).get_weights()
    if channels.size and (channels.min() < 0 or channels.max() >= weights[0].shape[-1]):
        raise LabError(f"channels {channels.tolist()}: {CONV} has channels 0.."
                       f"{weights[0].shape[-1] - 1}")
    pruned = copy_net(net, name=f"{net.name}_pruned_{channels.size}")
    zero_channels(pruned, weights, channels)
    return pruned


def zero_channels(net: Net, weights: list, channels) -> None:
    """Zero `channels` of `conv_3`'s weights (kernel: last axis; bias) and load them into `net`."""
    for w in weights:
        w[..., channels] = 0
    net.model.get_layer(CONV).set_weights(weights)


def check_drop(drop) -> float:
    """A threshold X as a number: the allowed fall in validation accuracy, above 0 and at most 100."""
    try:
        x = float(drop) if not isinstance(drop, bool) else float("nan")
    except (TypeError, ValueError):
        x = float("nan")
    if not 0 < x <= 100:
        raise LabError(f"drop={drop!r}: give the allowed fall in validation accuracy in percentage "
                       "points, a number above 0 and at most 100 (e.g. 4)")
    return x


def drop_text(drop: float) -> str:
    """A threshold as file names show it: 2, 4, 10, 2.5."""
    return f"{float(drop):g}"


def stop_step(accuracies, drop: float) -> int | None:
    """The stopping rule: the first k whose accuracy is at least `drop` points below step 0's.

    `accuracies[k]` is the validation accuracy with k channels pruned; None if never reached.
    """
    acc = np.asarray(accuracies, np.float64)
    hits = np.flatnonzero(acc[0] - acc >= check_drop(drop) - TOLERANCE)
    return int(hits[0]) if hits.size else None


@dataclass
class Repaired:
    """A repaired network B' and how it was chosen (accuracies in percentage points)."""

    net: Net
    drop: float  # X: the validation accuracy drop that chose it
    pruned: np.ndarray  # conv_3 channels zeroed, in pruning order
    step: int  # number of channels pruned
    valid_accuracy_badnet: float
    valid_accuracy: float
    source: Path | None = None  # the BadNet's file, when it came from one

    def __str__(self) -> str:
        return (f"X = {drop_text(self.drop)}: pruned {self.step} channels; validation accuracy "
                f"{self.valid_accuracy_badnet:.2f} % (B) -> {self.valid_accuracy:.2f} % (B'); "
                f"channels pruned in order: {', '.join(map(str, self.pruned))}")


def repair(sweep, drops=(2, 4, 10)) -> dict:
    """B' for each threshold X in `drops` (percentage points) from a `labkit.sweep.Sweep`: {X: Repaired}.

    B' is chosen by `stop_step` on the sweep's validation accuracy. A threshold the sweep never
    reaches is an error.
    """
    xs = [check_drop(drop) for drop in drops]  # all of them before any work
    acc = sweep.table.valid_accuracy.to_numpy()
    result = {}
    for drop, x in zip(drops, xs):
        step = stop_step(acc, x)
        if step is None:
            raise LabError(f"drop {drop_text(x)}: validation accuracy never falls {drop_text(x)} "
                           f"points below B's {acc[0]:.2f} % (its lowest is {acc.min():.2f} %); "
                           "choose a smaller drop")
        net = prune(sweep.badnet, sweep.order[:step])
        net.name = f"repaired_{drop_text(x)}"
        result[drop] = Repaired(net, x, sweep.order[:step].copy(), step, float(acc[0]),
                                float(acc[step]), sweep.badnet.path)
    return result
