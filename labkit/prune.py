"""The pruning defense: prune `conv_3` channels of the BadNet B, least active first, and keep B'.

Pruning channel c zeroes `conv_3`'s kernel[:, :, :, c] and bias[c]. Because `conv_3` uses ReLU
and `pool_3` max-pools it directly, that channel is then exactly 0 in `pool_3` (LAB.md). So the
sweep computes `pool_3` once per data file and, for every number k of pruned channels, runs only
the layers after `pool_3` on the stored activations with the pruned channels set to 0: the
pruned network's output, in seconds instead of an hour. Shown in 02_prune.ipynb.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import BATCH, IMAGE_SHAPE, Split, require
from .errors import LabError
from .files import atomic_path, read_json, write_json
from .metrics import check_labels
from .models import Net, copy_net, file_sha256, load_model, save_model

CONV, POOL = "conv_3", "pool_3"  # the layer pruned and the pooling layer right after it
FEATURE_BATCH = 128  # images per forward pass: small batches keep conv_1's output in the cache
HEAD_BATCH = 2048  # pool_3 activations per pass through the layers after pool_3
RULE = ("B' is the model at the first step whose validation accuracy is at least X percentage "
        "points below B's")


def _feature_fn(net: Net, layer: str):
    """A TF function: raw 0..255 images -> the activations of `layer`."""
    import keras
    import tensorflow as tf

    try:
        sub = keras.Model(net.model.input, net.model.get_layer(layer).output)
    except ValueError:
        raise LabError(f"{net.name}: the model has no layer {layer!r}") from None
    spec = tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32)
    return tf.function(lambda x: sub(x * net.scale, training=False), input_signature=[spec])


def _activations(net: Net, split: Split, fn, out: np.ndarray | None = None,
                 batch_size: int = BATCH, bar=None):
    """Run `fn` over `split` batch by batch, storing the activations in `out` if given.

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


def mean_activations(net: Net, split: Split, layer: str = POOL, batch_size: int = BATCH,
                     progress: bool = False) -> np.ndarray:
    """Mean activation of each channel of `layer` over the images of `split` (step 1 of the method).

    Images are read batch by batch; the network sees them multiplied by `net.scale`.
    """
    from tqdm.auto import tqdm

    with tqdm(total=len(split), desc=f"{layer} on {split.name}", unit="img",
              disable=not progress, leave=False) as bar:
        return _activations(net, split, _feature_fn(net, layer), None, batch_size, bar)[1]


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
    _set_conv(pruned, weights, channels)
    return pruned


def _set_conv(net: Net, weights: list, channels) -> None:
    """Zero `channels` of `conv_3`'s weights (kernel: last axis; bias) and load them into `net`."""
    for w in weights:
        w[..., channels] = 0
    net.model.get_layer(CONV).set_weights(weights)


def masking_problem(net: Net) -> str | None:
    """Why masking `pool_3` would not give the pruned network's output exactly, or None if it does.

    It does when `conv_3` is a ReLU convolution (a zeroed channel is exactly 0) and `pool_3`
    max-pools `conv_3`'s output directly (so that channel stays 0).
    """
    model = net.model
    try:
        conv, pool = model.get_layer(CONV), model.get_layer(POOL)
    except ValueError:
        return f"the model has no {CONV} or {POOL} layer"
    if type(conv).__name__ != "Conv2D" or conv.get_config().get("activation") != "relu":
        return f"{CONV} is not a ReLU convolution, so a zeroed channel need not be 0"
    if type(pool).__name__ != "MaxPooling2D" or pool.input is not conv.output:
        return f"{POOL} does not max-pool {CONV}'s output directly"
    return None


def _head_fn(net: Net):
    """A TF function (pool_3 activations, 0/1 channel mask) -> classes, with B's own layers."""
    import keras
    import tensorflow as tf

    pool = net.model.get_layer(POOL).output
    head = keras.Model(pool, net.model.outputs)
    specs = [tf.TensorSpec((None, *pool.shape[1:]), tf.float32), tf.TensorSpec(pool.shape[-1:])]
    return tf.function(lambda a, mask: tf.argmax(head(a * mask, training=False), axis=-1,
                                                 output_type=tf.int32), input_signature=specs)


def _masked_predictions(net: Net, acts: np.ndarray, order: np.ndarray, bar=None) -> np.ndarray:
    """Predictions (steps + 1, n) of B_k for k = 0..len(order), from stored `pool_3` activations.

    Pruning channel c changes only the images where c is non-zero somewhere in `pool_3`; the
    others keep their previous prediction (their input to the head is unchanged). The head is
    B's own layers with B's float32 ops, so the classes equal the pruned network's; only which
    batch an image is in differs, which TensorFlow may round differently in the last bit, just
    as `model.predict` does with two batch sizes.
    """
    head = _head_fn(net)
    mask = np.ones(acts.shape[-1], np.float32)
    active = (acts != 0).any(axis=(1, 2))  # (images, channels)

    def run(index):  # predictions for acts[index], batch by batch
        return np.concatenate([head(acts[index[i:i + HEAD_BATCH]], mask).numpy()
                               for i in range(0, len(index), HEAD_BATCH)]
                              or [np.zeros(0, np.int32)])

    preds = np.empty((len(order) + 1, len(acts)), np.int32)
    preds[0] = run(np.arange(len(acts)))
    for k, c in enumerate(order, start=1):
        mask[c] = 0
        changed = np.flatnonzero(active[:, c])
        preds[k] = preds[k - 1]
        preds[k, changed] = run(changed)
        if bar is not None:
            bar.update(1)
    return preds


def _zeroed_predictions(net: Net, splits: dict, order: np.ndarray, bar=None) -> dict:
    """The exact slow way: zero the channels in a copy of B, step by step, and run every file."""
    pruned, weights = copy_net(net), net.model.get_layer(CONV).get_weights()
    preds = {name: np.empty((len(order) + 1, len(s)), np.int32) for name, s in splits.items()}
    for k in range(len(order) + 1):
        _set_conv(pruned, weights, order[:k])
        for name, split in splits.items():
            preds[name][k] = np.concatenate([pruned.predict(x) for x, _ in split.batches()])
        if bar is not None and k:
            bar.update(1)
    return preds


@dataclass
class Sweep:
    """Every step of a pruning sweep: the table, the order, and B_k's predictions for every k.

    `table` has one row per number k of pruned channels (percentages in percentage points);
    `predictions(name, k)` gives B_k's predicted classes on a data file ("valid", "bd_valid",
    "test", "bd_test") at once, for sliders. `exact_masking` is False when the model did not
    allow the fast masked computation and each pruned network was run instead.
    """

    table: object  # pandas.DataFrame
    order: np.ndarray
    mean_activations: np.ndarray
    badnet: Net
    splits: dict
    exact_masking: bool = True
    _predictions: dict = field(default_factory=dict, repr=False)
    _labels: dict = field(default_factory=dict, repr=False)

    @property
    def steps(self) -> int:
        return len(self.order)

    def _get(self, name: str, k: int) -> np.ndarray:
        if name not in self._predictions:
            raise LabError(f"data file {name!r}: this sweep has {', '.join(self._predictions)}")
        if not 0 <= int(k) <= self.steps:
            raise LabError(f"step {k}: choose 0..{self.steps} pruned channels")
        return self._predictions[name][int(k)]

    def predictions(self, name: str, k: int) -> np.ndarray:
        """B_k's predicted classes (k channels pruned) on data file `name`, e.g. "valid"."""
        return self._get(name, k).astype(np.int64)

    def goodnet_predictions(self, name: str, k: int) -> np.ndarray:
        """GoodNet G(B, B_k)'s classes on `name`: B's class where B and B_k agree, else N."""
        self._get(name, k)
        return self._goodnet(name)[int(k)].astype(np.int64)

    def _goodnet(self, name: str) -> np.ndarray:
        """G(B, B_k)'s classes on `name` at every step k, shape (steps + 1, images)."""
        p = self._predictions[name]
        return np.where(p == p[0], p[0], self.badnet.num_classes)

    def labels(self, name: str) -> np.ndarray:
        """The labels of data file `name` (the target class in a poisoned file)."""
        self._get(name, 0)
        return self._labels[name]

    def to_csv(self, path: Path | str, protect: tuple = ()) -> Path:
        """Write the table as CSV, atomically."""
        with atomic_path(path, protect) as tmp:
            self.table.to_csv(tmp, index=False)
        return Path(path)


def sweep(badnet: Net, valid: Split, bd_valid: Split | None = None, test: Split | None = None,
          bd_test: Split | None = None, order: str = "increasing", seed: int = 0,
          progress: bool = False) -> Sweep:
    """Prune `conv_3` channels one by one (order: mean activations on `valid`), measuring each step.

    `valid`/`bd_valid` must be validation splits (the defense is designed on them) and
    `test`/`bd_test` test splits (used for the evaluation columns only). One sweep serves every
    threshold: see `repair`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    splits = {"valid": require(valid, "validation", "the pruning sweep (valid)")}
    for name, split, kind in (("bd_valid", bd_valid, "validation"), ("test", test, "test"),
                              ("bd_test", bd_test, "test")):
        if split is not None:
            splits[name] = require(split, kind, f"the pruning sweep ({name})")
    problem = masking_problem(badnet)
    if problem:
        warnings.warn(f"{badnet.name}: {problem}; running each pruned network instead of masking "
                      "(exact, but slow)", stacklevel=2)
    # pool_3 of every file for masking, else of the validation file only (for the order)
    acts, labels, means, sizes = _stacked_activations(
        badnet, {"valid": valid} if problem else splits, progress)
    for name, split in splits.items():
        if name not in labels:
            labels[name] = split.labels()
            check_labels(split, labels[name], badnet.num_classes)
    chosen = pruning_order(means["valid"], order, seed)
    with tqdm(total=len(chosen), desc="pruning steps", unit="step", disable=not progress,
              leave=False) as bar:
        if problem:
            preds = _zeroed_predictions(badnet, splits, chosen, bar)
        else:
            flat, preds, start = _masked_predictions(badnet, acts, chosen, bar), {}, 0
            for name, n in sizes.items():
                preds[name], start = flat[:, start:start + n], start + n
    result = Sweep(None, chosen, means["valid"], badnet, splits, not problem, preds, labels)
    result.table = pd.DataFrame(_columns(result))
    return result


def _stacked_activations(net: Net, splits: dict, progress: bool):
    """`pool_3` of all files' images in one array, and each file's labels, channel means, size."""
    from tqdm.auto import tqdm

    sizes = {name: len(s) for name, s in splits.items()}
    acts = np.empty((sum(sizes.values()), *net.model.get_layer(POOL).output.shape[1:]), np.float32)
    fn, labels, means, start = _feature_fn(net, POOL), {}, {}, 0
    with tqdm(total=len(acts), desc=f"{POOL} activations", unit="img", disable=not progress,
              leave=False) as bar:
        for name, split in splits.items():
            part = acts[start:start + sizes[name]]
            labels[name], means[name] = _activations(net, split, fn, part, bar=bar)
            start += sizes[name]
    return acts, labels, means, sizes


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


def _columns(s: Sweep) -> dict:
    """The sweep table's columns; percentages in percentage points."""
    k = np.arange(s.steps + 1)
    cols = {"pruned": k, "fraction_pruned": k / s.steps, "channel": np.r_[-1, s.order],
            "mean_activation": np.r_[np.nan, s.mean_activations[s.order]]}
    for column, name, what in COLUMNS:
        if name in s._predictions:
            y = s._labels[name]
            hits = (s._predictions[name] == y if what == "correct" else
                    s._goodnet(name) == y if what == "goodnet_correct" else
                    s._goodnet(name) == s.badnet.num_classes)
            cols[column] = 100.0 * hits.mean(axis=1)
    return cols


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


def drop_text(drop: float) -> str:
    """A threshold as file names show it: 2, 4, 10, 2.5."""
    return f"{float(drop):g}"


def check_drops(drops) -> list[float]:
    """The thresholds X as numbers, refusing any outside 0..100 percentage points."""
    values = []
    for drop in drops:
        try:
            x = float(drop)
        except (TypeError, ValueError):
            x = float("nan")
        if not 0 <= x <= 100:
            raise LabError(f"drop {drop!r}: a validation accuracy drop is in percentage points, "
                           "between 0 and 100")
        values.append(x)
    return values


def repair(sweep: Sweep, drops=(2, 4, 10)) -> dict:
    """B' for each threshold X in `drops` (percentage points), as a dict {X: Repaired}.

    The rule: B' is the model at the FIRST step whose validation accuracy is at least X
    percentage points below B's. A threshold the sweep never reaches is an error.
    """
    valid = sweep._predictions["valid"] == sweep._labels["valid"]
    correct = valid.sum(axis=1)  # counts, so "at least X points" is decided without rounding
    n = valid.shape[1]
    base = 100.0 * correct[0] / n
    result = {}
    for drop, x in zip(drops, check_drops(drops)):
        reached = np.flatnonzero(100 * (correct[0] - correct) >= x * n)
        if not reached.size:
            lowest = 100 * correct.min() / n
            raise LabError(f"drop {drop_text(x)}: validation accuracy never falls {drop_text(x)} "
                           f"points below B's {base:.2f} % (its lowest is {lowest:.2f} %); "
                           "choose a smaller drop")
        step = int(reached[0])
        net = prune(sweep.badnet, sweep.order[:step])
        net.name = f"repaired_{drop_text(x)}"
        result[drop] = Repaired(net, x, sweep.order[:step].copy(), step, base,
                                100.0 * correct[step] / n, sweep.badnet.path)
    return result


def save_repaired(repaired, out_dir: Path | str, source: Path | str | None = None,
                  protect: tuple = ()) -> list[Path]:
    """Write each B' as `repaired_<X>.h5` with `repaired_<X>.json` beside it; return the paths.

    `repaired` is one Repaired, a list of them or `repair`'s dict. The JSON records the rule,
    the channels pruned in order, the step, validation accuracy of B and B', the source model's
    SHA-256 and the input scale. Writes are atomic and never replace `source` or `protect`.
    """
    items = repaired.values() if isinstance(repaired, dict) else (
        [repaired] if isinstance(repaired, Repaired) else repaired)
    out_dir, written = Path(out_dir), []
    for r in items:
        src = Path(source) if source is not None else r.source
        guard = (*protect, *([src] if src else []))
        model_path = out_dir / f"repaired_{drop_text(r.drop)}.h5"
        save_model(r.net, model_path, protect=guard)
        info = {"rule": RULE, "drop": r.drop, "step": r.step, "pruned_channels": r.pruned.tolist(),
                "layer": CONV, "valid_accuracy_badnet": r.valid_accuracy_badnet,
                "valid_accuracy": r.valid_accuracy, "input_scale": r.net.scale,
                "source_model": str(src) if src else None,
                "source_sha256": file_sha256(src) if src and src.is_file() else None}
        written += [model_path, write_json(model_path.with_suffix(".json"), info, protect=guard,
                                           partner=model_path)]
    return written


def load_repaired(folder: Path | str) -> dict:
    """The B' networks `save_repaired` wrote in `folder`, as {X: Repaired} sorted by X."""
    folder = Path(folder)
    found = {}
    for info_path in sorted(folder.glob("repaired_*.json")):
        info = read_json(info_path, partner=info_path.with_suffix(".h5"))
        net = load_model(info_path.with_suffix(".h5"))
        found[float(info["drop"])] = Repaired(
            net, float(info["drop"]), np.asarray(info["pruned_channels"]), int(info["step"]),
            info["valid_accuracy_badnet"], info["valid_accuracy"],
            Path(info["source_model"]) if info.get("source_model") else None)
    if not found:
        raise LabError(f"{folder}: no repaired networks (repaired_X.h5 with .json) here; "
                       "run 02_prune.ipynb (or `labkit prune`) first")
    return dict(sorted(found.items()))
