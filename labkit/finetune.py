"""Beyond pruning: fine-tuning and fine-pruning (Liu, Dolan-Gavitt & Garg, RAID 2018), clean data only.

Fine-pruning prunes B as the lab does (`labkit.prune`: least active `conv_3` channels first, B' at
the first step whose validation accuracy is at least X points below B's), then trains the pruned
network for a number of steps on clean faces; X = 0 is fine-tuning alone, the ablation. Only the
defender's clean validation file is used: split (seeded) into a part to train on and a part to
watch. conv_1 and conv_2 are frozen, so `store` computes their output (`pool_2`) once per BadNet
and conv_3 and the layers after it train on it (`fine_tune`). Test sets given as `measure` are
measured for tables and figures only: nothing is chosen on them. Shown in
05_beyond_pruning.ipynb; `labkit fine-prune` saves the result.

Defaults: Adam at LEARNING_RATE (after WARMUP steps, cosine decay to 0) for STEPS steps of BATCH
faces, whatever the number of faces; conv_1 and conv_2 frozen (FROZEN); each pass over the faces
a new copy of them mirrored, shifted and brightened at random (SHIFT, BRIGHTNESS). They were
chosen by experiment on the demo's pruning-aware BadNet; the evidence, and the command that
re-runs the check, are in docs/experiments/fine-tuning.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .data import Split, require
from .errors import LabError, check_whole
from .files import file_sha256, write_json
from .cache import FEATURE_BATCH, activations, feature_fn
from .metrics import accuracy
from .models import Net, copy_net, save_model, zeroed_channels
from .prune import CONV, RULE, check_drop, drop_text, repair

STEPS = 144  # Adam steps of BATCH faces: 12 passes over the demo's 720 training faces, at any size
LEARNING_RATE = 1.75e-2  # Adam's peak learning rate: reached after the warm-up, then cosine to 0
BATCH = 64  # training batch size
MAX_STEPS, MAX_BATCH = 1_000_000, 1 << 16  # more is a typing mistake, not a setting
WARMUP = 12  # steps over which the learning rate climbs from 0 to its peak
ROUNDS = 12  # times the watch part (and `measure`) are measured during training, at even steps
SHIFT = 2  # augmentation: each face shifted by up to this many pixels (edge pixels repeated)
BRIGHTNESS = 0.2  # augmentation: each face's pixels multiplied by a number within 1 -/+ this
WATCH_SHARE = 0.2  # share of the validation faces kept out of training, to watch clean accuracy
CURVE_FACES = 500  # faces of each `measure` set (a seeded sample) measured between the ends
SEED = 0  # the split, the order of the training faces and their augmentation
FROZEN = ("conv_1", "conv_2")  # not trained: their output, pool_2, is computed once and stored
STORED = "pool_2"
HEAD_LAYERS = ("conv_3", "fc_1", "conv_4", "fc_2", "output")  # the layers trained, after pool_2

@dataclass
class FineTuned:
    """A network after fine-tuning, and how it was made (accuracies in percentage points)."""

    net: Net
    drop: float  # X of the pruning before it; 0: fine-tuning alone
    pruned: np.ndarray  # conv_3 channels pruned (in pruning order), exactly 0 throughout
    history: object  # pandas table, one row per round of steps (step 0: before training)
    settings: dict  # steps, learning rate, batch size, seed, watch share, images used
    watch_accuracy_badnet: float | None = None  # B on the watch part
    seconds: float = 0.0  # time in the training loop (the watch part and `measure` included)
    source: Path | None = None  # the BadNet's file, when it came from one

    def __str__(self) -> str:
        h = self.history
        what = ("fine-tuned B (no pruning)" if self.drop == 0 else
                f"X = {drop_text(self.drop)}: pruned {len(self.pruned)} channels, then fine-tuned")
        n = self.settings["steps"]
        return (f"{what}; {n} step{'s' * (n != 1)} in {self.seconds:.1f} s; accuracy on the "
                f"watch part {h.watch_accuracy.iloc[0]:.2f} % -> {h.watch_accuracy.iloc[-1]:.2f} %")


def stem(drop: float) -> str:
    """The file name (without suffix) for threshold `drop`: fine_pruned_<X>, or fine_tuned for 0."""
    return "fine_tuned" if drop == 0 else f"fine_pruned_{drop_text(drop)}"


def split_faces(x, y, watch_share: float = WATCH_SHARE, seed=SEED):
    """((x, y) to train on, (x, y) to watch): a seeded permutation of the faces cut in two, its
    last `watch_share` to watch (Task 7 of 05_beyond_pruning)."""
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - watch_share)))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def split_valid(valid: Split, watch_share: float = WATCH_SHARE, seed: int = SEED):
    """The clean validation faces, split at random (seeded): ((x, y) to train on, (x, y) to watch)."""
    x, y = require(valid, "validation", "fine-tuning").load()
    return split_faces(x, y, watch_share, [seed, 5])


def check_settings(steps, lr, batch_size=BATCH) -> None:
    """Refuse steps or a batch size that are not whole numbers from 1 to an absurd size, or a
    learning rate outside (0, 1)."""
    check_whole(steps, "steps", 1, MAX_STEPS)
    check_whole(batch_size, "batch size", 1, MAX_BATCH)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 1:
        raise LabError(f"learning rate {lr!r}: give a number above 0 and below 1 "
                       f"(default {LEARNING_RATE:g})")


def check_finite(net: Net, what: str = "fine-tuning") -> None:
    """Refuse a network with NaN or infinite weights (training diverged)."""
    if not all(np.isfinite(w).all() for w in net.model.get_weights()):
        raise LabError(f"{what} diverged: the network has NaN or infinite weights; nothing was "
                       f"saved: lower the learning rate (default {LEARNING_RATE:g})")


def augment(x: np.ndarray, rng: np.random.Generator, shift: int = SHIFT,
            brightness: float = BRIGHTNESS) -> np.ndarray:
    """A new copy of the faces `x` (N, 55, 47, 3), pixels 0..1, each changed at random (`rng`).

    Each face is mirrored left-right with probability 1/2, moved by up to `shift` pixels in each
    direction (edge pixels repeated), and its pixels multiplied by a number drawn between
    1 - `brightness` and 1 + `brightness` (then clipped to 0..1). Fine-tuning trains on COPIES
    such copies in turn, so the few clean faces the defender has look different: less overfitting.
    """
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    n, h, w = len(x), x.shape[1], x.shape[2]
    mirror = rng.random(n) < 0.5
    dy, dx = rng.integers(0, 2 * shift + 1, (2, n))
    gain = rng.uniform(1 - brightness, 1 + brightness, n).astype(np.float32)
    out = np.empty((n, h, w, x.shape[3]), np.float32)
    for a in range(2 * shift + 1):  # one copy per (vertical, horizontal) shift and mirror
        for b in range(2 * shift + 1):
            for m in (False, True):
                rows = np.flatnonzero((dy == a) & (dx == b) & (mirror == m))
                part = padded[rows, a:a + h, b:b + w]
                out[rows] = part[:, :, ::-1] if m else part
    out *= gain[:, None, None, None]
    return np.clip(out, 0, 1, out=out)


def schedule(lr: float, steps: int, warmup: int = WARMUP):
    """Adam's learning rate: from 0 up to `lr` over `warmup` steps, then down to 0 (cosine)."""
    import keras

    rise = min(warmup, steps // 2)
    if not rise:
        return keras.optimizers.schedules.CosineDecay(lr, steps)
    return keras.optimizers.schedules.CosineDecay(0.0, steps - rise, warmup_target=lr,
                                                  warmup_steps=rise)


@dataclass
class Stored:
    """What fine-tuning B needs that does not depend on the learning rate or on the pruning:
    B's `pool_2` activations (conv_1 and conv_2 are frozen, so they never change) of the
    training faces' augmented copies, of the watch part and of the `measure` sets, the order
    the training faces are shown in, and B' for each X asked (`repaired`). Made by `store`."""

    badnet: Net
    valid: Split
    train: np.ndarray  # (passes, training faces, *pool_2): B's pool_2 of each pass's copy
    labels: np.ndarray  # the training faces' labels
    order: np.ndarray  # (steps * batch_size,): the face of each training sample, pass by pass
    copy: np.ndarray  # (steps * batch_size,): the copy in `train` each sample uses (its pass)
    watch: tuple  # (pool_2, labels) of the watch part
    watch_accuracy_badnet: float  # B on the watch part
    measure: dict  # column -> (pool_2, labels, rows of the sample measured between the ends)
    settings: dict
    _repaired: dict = None
    _trainer: tuple = None

    def trainer(self):
        """(head, step, adam, peak): one copy of B from pool_2 on, its training step (traced
        once for every run), Adam, and the variable holding Adam's peak learning rate."""
        import keras
        import tensorflow as tf

        if self._trainer is None:
            head = _head(copy_net(self.badnet))
            peak = keras.Variable(LEARNING_RATE, trainable=False, name="peak_learning_rate")
            shape = schedule(1.0, self.settings["steps"])  # times the peak: `schedule(peak, steps)`
            adam = keras.optimizers.Adam(lambda: shape(adam.iterations) * peak)
            adam.build(head.trainable_variables)
            loss = keras.losses.SparseCategoricalCrossentropy()

            @tf.function
            def step(x, y):  # what Keras's fit does for one batch
                with tf.GradientTape() as tape:
                    value = loss(y, head(x, training=True))
                adam.apply(tape.gradient(value, head.trainable_variables), head.trainable_variables)
                return value

            self._trainer = head, step, adam, peak
        return self._trainer

    def repaired(self, drop: float):
        """B' for threshold `drop` (the lab's rule on all of `valid`), found once."""
        from .sweep import sweep

        self._repaired = self._repaired or {}
        if drop not in self._repaired:
            self._repaired[drop] = repair(sweep(self.badnet, self.valid), [drop])[drop]
        return self._repaired[drop]


def store(badnet: Net, valid: Split, steps: int = STEPS, batch_size: int = BATCH,
          seed: int = SEED, watch_share: float = WATCH_SHARE, measure: dict | None = None,
          augmentation: bool = True, stamp=None) -> Stored:
    """The `Stored` activations for fine-tuning `badnet` (or its B') on `valid`.

    The `steps * batch_size` training samples run through the training faces pass after pass,
    each pass in a new (seeded) order and with a new augmented copy of every face (`augment`;
    the faces as they are, without `augmentation`). At the lab's size the training is shorter
    than one pass, so only one copy is made. `stamp(faces, rng)`, if given, changes each copy's
    faces (pixels 0..1) after the augmentation (Neural Cleanse's unlearning stamps its trigger).
    """
    check_settings(steps, LEARNING_RATE, batch_size)
    (x, y), (xw, yw) = split_valid(valid, watch_share, seed)
    rng, total = np.random.default_rng([seed, 6]), steps * batch_size
    passes = -(-total // len(y))
    order = np.concatenate([rng.permutation(len(y)) for _ in range(passes)])[:total]
    fn = feature_fn(badnet, STORED)
    stamped = (lambda faces: stamp(faces, rng)) if stamp else None
    train = (np.stack([_features(fn, x, rng, stamped) for _ in range(passes)]) if augmentation
             else _features(fn, x, stamp=stamped)[None])
    sets, pick = {}, np.random.default_rng([seed, 7])
    for column, split in (measure or {}).items():
        out = np.empty((len(split), *train.shape[2:]), np.float32)
        labels, _ = activations(badnet, split, fn, out)
        rows = np.sort(pick.choice(len(labels), min(CURVE_FACES, len(labels)), replace=False))
        sets[column] = (out, labels, rows)
    settings = {"steps": steps, "batch_size": batch_size, "seed": seed, "watch_share": watch_share,
                "train_images": len(y), "watch_images": len(yw), "optimizer": "Adam",
                "schedule": f"{WARMUP} steps' warm-up, then cosine to 0",
                "frozen_layers": list(FROZEN), "trained_from": f"{STORED} activations, stored",
                "augmentation": ({"mirror": 0.5, "shift_pixels": SHIFT, "brightness": BRIGHTNESS}
                                 if augmentation else None)}
    watch = (_features(fn, xw), yw)
    copy = np.arange(total) // len(y) if augmentation else np.zeros(total, np.int64)
    return Stored(badnet, valid, train, y, order, copy, watch, _accuracy(_head(badnet), *watch),
                  sets, settings)


def _head(net: Net):
    """The layers of `net` from pool_2 on, as a model taking pool_2 (sharing `net`'s layers)."""
    import keras

    return keras.Model(net.model.get_layer(STORED).output, net.model.output)


def _features(fn, x: np.ndarray, rng: np.random.Generator | None = None, stamp=None) -> np.ndarray:
    """`fn` (cache.feature_fn) of the raw faces `x`, each augmented first if `rng` is given and
    then `stamp`ed (see `store`)."""
    parts = []
    for i in range(0, len(x), FEATURE_BATCH):
        chunk = x[i:i + FEATURE_BATCH]
        if rng is not None or stamp is not None:
            faces = augment(chunk / 255, rng) if rng is not None else chunk / 255
            chunk = (stamp(faces) if stamp else faces) * 255
        parts.append(fn(chunk).numpy())
    return np.concatenate(parts)


def _frozen_weights(net: Net) -> list:
    return [w for name in FROZEN for w in net.model.get_layer(name).get_weights()] + [net.scale]


def fine_tune(net: Net, stored: Stored, lr: float = LEARNING_RATE, progress: bool = False,
              curves: bool = True) -> FineTuned:
    """`net` (B or a B' of `stored.badnet`) trained further on the stored training faces (Adam).

    Only conv_3 and the layers after it train, on the stored `pool_2` activations (`store`):
    the same as training the whole network with conv_1 and conv_2 frozen, without running them
    again. The learning rate follows `schedule`. Channels of conv_3 that enter with zero kernel
    and bias get no gradient through their ReLU; they are checked to leave exactly zero. With
    `curves`, the watch part and the `measure` sets' samples are measured after each of ROUNDS
    rounds of steps, for figures only; the first and last rows measure the whole sets.
    Returns a FineTuned (drop 0); `net` is left alone.
    """
    import keras
    import pandas as pd
    from tqdm.auto import tqdm

    check_settings(stored.settings["steps"], lr)
    if not all(np.array_equal(a, b) for a, b in zip(_frozen_weights(net), _frozen_weights(stored.badnet))):
        raise LabError(f"{net.name}: its {', '.join(FROZEN)} differ from those of "
                       f"{stored.badnet.name}, whose activations were stored; store its own")
    zeroed, steps, batch = zeroed_channels(net), stored.settings["steps"], stored.settings["batch_size"]
    head, step, adam, peak = stored.trainer()
    _copy_weights(net.model, head)  # a fresh start: net's weights, Adam's state and step at 0
    for variable in adam.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    peak.assign(lr)
    rounds = np.array_split(np.arange(steps), min(ROUNDS, steps))
    rows, start = [], time.perf_counter()

    def row(step, loss, whole):  # the watch part, and what `measure` asks for
        look, nan = whole or curves, float("nan")
        rows.append({"step": step, "loss": loss,
                     "watch_accuracy": _accuracy(head, *stored.watch) if look else nan,
                     **{col: (_accuracy(head, f, y) if whole else _accuracy(head, f[r], y[r]))
                        if look else nan for col, (f, y, r) in stored.measure.items()}})

    row(0, float("nan"), True)
    for i, part in enumerate(tqdm(rounds, desc=f"fine-tuning {net.name}", unit="round",
                                  disable=not progress, leave=False)):
        for k in part:
            samples = np.arange(k * batch, (k + 1) * batch)
            faces = stored.order[samples]
            loss = float(step(stored.train[stored.copy[samples], faces], stored.labels[faces]))
        if not np.isfinite(loss):
            check_finite(Net(head, name=net.name))
        row(int(part[-1]) + 1, loss, i == len(rounds) - 1)
    tuned = copy_net(net, name=f"{net.name}_fine_tuned")
    _copy_weights(head, tuned.model)
    check_finite(tuned)
    check_zeroed(tuned, zeroed)
    return FineTuned(tuned, 0.0, zeroed, pd.DataFrame(rows), {**stored.settings, "learning_rate": lr},
                     stored.watch_accuracy_badnet, time.perf_counter() - start, net.path)


def _copy_weights(source, into) -> None:
    """Set the weights of the head's layers (pool_2 on) in model `into` to those in `source`."""
    for name in HEAD_LAYERS:
        into.get_layer(name).set_weights(source.get_layer(name).get_weights())


def _accuracy(head, features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy (percentage points) of `head` (pool_2 -> output) on stored activations."""
    found = [np.argmax(head(features[i:i + 1024], training=False), axis=1)
             for i in range(0, len(features), 1024)]
    return accuracy(np.concatenate(found), labels)


def check_zeroed(net: Net, channels) -> None:
    """Stop if any of `channels` of conv_3 is no longer exactly zero (kernel and bias)."""
    moved = np.setdiff1d(channels, zeroed_channels(net))
    if moved.size:
        raise LabError(f"{net.name}: pruned conv_3 channels {moved.tolist()} changed during "
                       "fine-tuning; this is a bug in labkit, please report it")


def fine_prune(badnet: Net, valid: Split, drop: float = 4, steps: int = STEPS,
               lr: float = LEARNING_RATE, batch_size: int = BATCH, seed: int = SEED,
               measure: dict | None = None, progress: bool = False, augmentation: bool = True,
               curves: bool = True, stored: Stored | None = None) -> FineTuned:
    """Fine-pruning: B' for threshold `drop` (the lab's rule, on all of `valid`), then `fine_tune`.

    `drop` 0 skips the pruning: fine-tuning alone. `stored` (from `store(badnet, valid, ...)`,
    whose `measure` and augmentation it then uses) serves several runs on one BadNet (other
    rates, other X); without it, one is made. See `store` and `fine_tune` for the arguments.
    """
    x = 0.0 if _is_zero(drop) else check_drop(drop)
    check_settings(steps, lr, batch_size)
    if stored is None:
        stored = store(badnet, valid, steps, batch_size, seed, measure=measure,
                       augmentation=augmentation)
    elif (stored.badnet is not badnet or stored.valid.path != valid.path
          or (stored.settings["steps"], stored.settings["batch_size"], stored.settings["seed"])
          != (steps, batch_size, seed)):
        raise LabError(f"the stored activations are of {stored.badnet.name} on "
                       f"{stored.valid.path} with {stored.settings['steps']} steps of "
                       f"{stored.settings['batch_size']} (seed {stored.settings['seed']}), not of "
                       f"{badnet.name} on {valid.path} with {steps} of {batch_size} (seed {seed})")
    start, pruned = badnet, np.zeros(0, np.int64)
    if x:
        chosen = stored.repaired(x)
        start, pruned = chosen.net, chosen.pruned
    result = fine_tune(start, stored, lr, progress=progress, curves=curves)
    return replace(result, drop=x, pruned=pruned if x else result.pruned, source=badnet.path)


def _is_zero(drop) -> bool:
    return not isinstance(drop, bool) and isinstance(drop, (int, float)) and drop == 0


def save_fine_tuned(result: FineTuned, out_dir: Path | str, protect: tuple = ()) -> list[Path]:
    """Write `<stem>.h5` (the course's format, opened by its eval.py) and `<stem>.json` beside it.

    The JSON records the channels pruned, the settings, the watch accuracy before and after, the
    history and the source model's SHA-256. NaN weights are refused; writes are atomic.
    """
    check_finite(result.net)
    src = result.source
    guard = (*protect, *([src] if src else []))
    model_path = Path(out_dir) / f"{stem(result.drop)}.h5"
    save_model(result.net, model_path, protect=guard)
    h = result.history
    info = {"method": "fine-tuning" if result.drop == 0 else "fine-pruning",
            "rule": None if result.drop == 0 else RULE, "drop": result.drop, "layer": CONV,
            "step": len(result.pruned), "pruned_channels": np.asarray(result.pruned).tolist(),
            **result.settings, "seconds": round(result.seconds, 2),
            "watch_accuracy_badnet": result.watch_accuracy_badnet,
            "watch_accuracy_before": float(h.watch_accuracy.iloc[0]),
            "watch_accuracy_after": float(h.watch_accuracy.iloc[-1]),
            "history": h[["step", "loss", "watch_accuracy"]].to_dict("records"),
            "input_scale": result.net.scale, "source_model": str(src) if src else None,
            "source_sha256": file_sha256(src) if src and Path(src).is_file() else None}
    return [model_path, write_json(model_path.with_suffix(".json"), info, protect=guard,
                                   partner=model_path)]
