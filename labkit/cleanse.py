"""Neural Cleanse: reverse-engineer the trigger, find the infected class, unlearn it (Wang, Yao, Shan,
Li, Viswanath, Zheng & Zhao, "Neural Cleanse: identifying and mitigating backdoor attacks in
neural networks", IEEE S&P 2019).

For each class t, search for the smallest trigger that sends clean faces to t: a mask m (55 x 47,
values 0..1) and a pattern p (55 x 47 x 3, pixels 0..255) stamped as (1 - m) * x + m * p, found
by Adam on B's cross-entropy towards t plus lambda_t times the mask's L1 norm. As in the paper,
each class's lambda_t grows (x 1.5) after PATIENCE steps in which the stamp sends at least
SUCCESS of the faces to t and shrinks (/ 1.5^1.5) after PATIENCE steps in which it does not, and
a class's result is the smallest mask that reached SUCCESS. Every class is searched at once, in one
batch, each with its own sigmoid-parameterised mask and pattern, over the same few clean validation
faces. A backdoor's target needs a far smaller mask than any other class: its L1 norm is an outlier
on the small side of the median absolute deviation (MAD, scaled by 1.4826), anomaly index > 2.

With many classes (1283 in the lab) a full search of each costs too much on a CPU: a short coarse
search of every class screens them, and only the SHORTLIST classes with the smallest coarse norms
are searched in full; the anomaly index is then computed among them (a stricter test: their median
is that of the easiest classes). `Cleansed.screened_out` says which classes were dropped and why.

The repair by unlearning: fine-tune B on clean validation faces, a share of them stamped with the
recovered trigger of each flagged class and labelled with their true class (`labkit.finetune`'s
recipe). Shown in 06_unknown_trigger.ipynb; `labkit cleanse` runs it on the course's files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import IMAGE_SHAPE, Split, require
from .errors import LabError
from .files import file_sha256, write_json
from .models import Net, save_model

FACES = 8  # clean validation faces every class's trigger is searched over
STEPS = 200  # Adam steps of the full search
LEARNING_RATE = 0.1  # Adam's learning rate on the mask's and pattern's logits
COST = 1e-2  # each class's starting lambda: weight of the mask's L1 norm in the loss
SUCCESS = 0.99  # share of the faces the stamp must send to the class for lambda to grow
PATIENCE = 5  # steps above (below) SUCCESS before lambda grows (shrinks)
UP, DOWN = 1.5, 1.5 ** 1.5  # lambda's factors, as in the paper
ANOMALY = 2.0  # anomaly index above which a class with a small norm is flagged
MAD_SCALE = 1.4826  # makes the MAD of normal data estimate its standard deviation
SHORTLIST = 100  # classes searched in full when B has more (the demo has 100)
COARSE_FACES, COARSE_STEPS = 4, 40  # the screening search of every class
CLASSES_AT_ONCE = 128  # classes in one screening batch (bounds the memory)
STAMPED_SHARE = 0.2  # unlearning: share of the training faces stamped with a recovered trigger
SEED = 0


def anomaly_index(norms) -> np.ndarray:
    """Each norm's distance from the median in units of the MAD (times MAD_SCALE)."""
    norms = np.asarray(norms, np.float64)
    median = np.median(norms)
    mad = MAD_SCALE * np.median(np.abs(norms - median))
    return np.abs(norms - median) / mad if mad > 0 else np.zeros_like(norms)


def flagged(norms, threshold: float = ANOMALY) -> np.ndarray:
    """Positions of the norms on the small side of the median with anomaly index > threshold."""
    norms = np.asarray(norms, np.float64)
    return np.flatnonzero((anomaly_index(norms) > threshold) & (norms < np.median(norms)))


def stamp(images: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Images (N, 55, 47, 3) with a trigger stamped: (1 - mask) * image + mask * pattern."""
    mask = np.asarray(mask, np.float32).reshape(*IMAGE_SHAPE[:2], 1)
    return (1 - mask) * np.asarray(images, np.float32) + mask * np.asarray(pattern, np.float32)


@dataclass
class Search:
    """The reverse-engineered triggers of `classes` (one row each)."""

    classes: np.ndarray
    masks: np.ndarray  # (C, 55, 47), 0..1
    patterns: np.ndarray  # (C, 55, 47, 3), pixels 0..255
    norms: np.ndarray  # L1 norm of each mask
    success: np.ndarray  # share of the faces the stamp sends to the class
    reached: np.ndarray  # whether the stamp ever sent SUCCESS of the faces there
    seconds: float


def search(net: Net, faces: np.ndarray, classes, steps: int = STEPS, lr: float = LEARNING_RATE,
           cost: float = COST, seed: int = SEED) -> Search:
    """Every class of `classes` searched at once over the raw 0..255 `faces` (see module text)."""
    import keras
    import tensorflow as tf

    start = time.perf_counter()
    classes = np.asarray(classes, np.int64)
    c, f = len(classes), len(faces)
    rng = np.random.default_rng([seed, 23])
    mask_w = tf.Variable(rng.normal(-2, 0.5, (c, *IMAGE_SHAPE[:2], 1)).astype(np.float32))
    pattern_w = tf.Variable(rng.normal(0, 0.5, (c, *IMAGE_SHAPE)).astype(np.float32))
    best = [tf.Variable(tf.zeros_like(v)) for v in (mask_w, pattern_w)]
    best_norm = tf.Variable(tf.fill([c], np.float32(np.inf)))
    x = tf.constant(np.asarray(faces, np.float32))
    labels = tf.constant(np.repeat(classes, f))
    optimizer = keras.optimizers.Adam(lr)
    model, scale = net.model, np.float32(net.scale)

    @tf.function
    def step(lam):
        with tf.GradientTape() as tape:
            mask, pattern = tf.sigmoid(mask_w), 255 * tf.sigmoid(pattern_w)
            stamped = (1 - mask[:, None]) * x[None] + (mask * pattern)[:, None]
            out = model(tf.reshape(stamped, (-1, *IMAGE_SHAPE)) * scale, training=False)
            ce = tf.reshape(keras.losses.sparse_categorical_crossentropy(labels, out), (c, f))
            norm = tf.reduce_sum(mask, axis=(1, 2, 3))
            loss = tf.reduce_sum(tf.reduce_mean(ce, axis=1) + lam * norm)
        optimizer.apply_gradients(zip(tape.gradient(loss, [mask_w, pattern_w]), [mask_w, pattern_w]))
        hits = tf.cast(tf.equal(tf.argmax(out, -1), labels), tf.float32)
        success = tf.reduce_mean(tf.reshape(hits, (c, f)), axis=1)
        better = (success >= SUCCESS) & (norm < best_norm)  # the mask before this step's update
        for keep, now in zip(best, (mask, pattern)):
            keep.assign(tf.where(better[:, None, None, None], now, keep))
        best_norm.assign(tf.where(better, norm, best_norm))
        return success, norm

    lam, up, down = np.full(c, cost, np.float32), np.zeros(c, int), np.zeros(c, int)
    last = None
    for _ in range(steps):
        success, norm = (v.numpy() for v in step(tf.constant(lam)))
        ok = success >= SUCCESS
        up, down = np.where(ok, up + 1, 0), np.where(ok, 0, down + 1)
        lam = np.where(up >= PATIENCE, lam * UP, np.where(down >= PATIENCE, lam / DOWN, lam))
        up, down = np.where(up >= PATIENCE, 0, up), np.where(down >= PATIENCE, 0, down)
        last = success, norm
    reached = np.isfinite(best_norm.numpy())
    masks = np.where(reached[:, None, None], best[0].numpy()[..., 0], tf.sigmoid(mask_w).numpy()[..., 0])
    patterns = np.where(reached[:, None, None, None], best[1].numpy(),
                        255 * tf.sigmoid(pattern_w).numpy())
    norms = masks.sum(axis=(1, 2), dtype=np.float64)
    success = np.where(reached, SUCCESS, last[0]) if last else np.zeros(c)
    return Search(classes, masks, patterns, norms, success, reached, time.perf_counter() - start)


def faces_of(valid: Split, count: int, seed: int = SEED) -> np.ndarray:
    """`count` clean validation faces, chosen at random (seeded): what the search stamps."""
    x, _ = require(valid, "validation", "Neural Cleanse").load()
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= len(x):
        raise LabError(f"faces {count!r}: give a whole number from 1 to {len(x)} (the validation "
                       f"faces; default {FACES})")
    return x[np.sort(np.random.default_rng([seed, 24]).choice(len(x), count, replace=False))]


@dataclass
class Cleansed:
    """Neural Cleanse's result: the full search of the shortlist, its anomaly indices and the
    classes it flags; `coarse` is the screening search of every class (None without screening)."""

    full: Search
    anomaly: np.ndarray  # anomaly index of each class of `full`
    flagged: np.ndarray  # classes flagged as infected (small norm, anomaly index > ANOMALY)
    num_classes: int
    coarse: Search | None = None
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def table(self):
        """One row per class searched in full: norm, anomaly index, flagged."""
        import pandas as pd

        return pd.DataFrame({"class": self.full.classes, "mask L1 norm": self.full.norms,
                             "reached": self.full.reached, "anomaly index": self.anomaly,
                             "flagged": np.isin(self.full.classes, self.flagged)})

    @property
    def screened_out(self) -> dict:
        """{class: why it was not searched in full} (empty without screening)."""
        if self.coarse is None:
            return {}
        cut = self.coarse.norms[np.isin(self.coarse.classes, self.full.classes)].max()
        return {int(c): ("the coarse search never sent " f"{SUCCESS:.0%} of the faces there"
                         if not r else f"coarse mask norm {n:.1f} above the shortlist's {cut:.1f}")
                for c, n, r in zip(self.coarse.classes, self.coarse.norms, self.coarse.reached)
                if c not in set(self.full.classes.tolist())}

    def trigger(self, cls: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask, pattern) recovered for class `cls` (one searched in full)."""
        where = np.flatnonzero(self.full.classes == cls)
        if not where.size:
            raise LabError(f"class {cls}: not searched in full (see screened_out)")
        return self.full.masks[where[0]], self.full.patterns[where[0]]

    def lines(self) -> list[str]:
        t = self.table
        median = float(np.median(t["mask L1 norm"]))
        head = [f"Neural Cleanse: {len(t)} of {self.num_classes} classes searched in full "
                f"({self.settings.get('faces')} faces, {self.settings.get('steps')} steps) in "
                f"{self.seconds:.1f} s; median mask L1 norm {median:.1f}"]
        if self.coarse is not None:
            head.append(f"  screened out {self.num_classes - len(t)} classes by a coarse search "
                        f"of every class ({self.settings.get('coarse_faces')} faces, "
                        f"{self.settings.get('coarse_steps')} steps)")
        small = t.sort_values("mask L1 norm").head(3)
        head += [f"  class {int(r['class'])}: mask L1 norm {r['mask L1 norm']:.1f}, anomaly "
                 f"index {r['anomaly index']:.2f}" + (" (flagged)" if r["flagged"] else "")
                 for _, r in small.iterrows()]
        head.append(f"  flagged (anomaly index > {ANOMALY:g}, small side): "
                    + (", ".join(map(str, self.flagged.tolist())) or "none"))
        return head


def cleanse(net: Net, valid: Split, faces: int = FACES, steps: int = STEPS,
            shortlist: int = SHORTLIST, seed: int = SEED, progress: bool = False) -> Cleansed:
    """Neural Cleanse on B with clean validation faces only; see the module's text."""
    from tqdm.auto import tqdm

    check_count("steps", steps)
    check_count("shortlist", shortlist, 3)
    start = time.perf_counter()
    x = faces_of(valid, faces, seed)
    n, coarse = net.num_classes, None
    classes = np.arange(n)
    if n > shortlist:
        parts = []
        for i in tqdm(range(0, n, CLASSES_AT_ONCE), desc="Neural Cleanse: screening",
                      unit="batch", disable=not progress, leave=False):
            parts.append(search(net, x[:COARSE_FACES], classes[i:i + CLASSES_AT_ONCE],
                                COARSE_STEPS, seed=seed))
        coarse = Search(classes, *(np.concatenate([getattr(p, k) for p in parts])
                                   for k in ("masks", "patterns", "norms", "success", "reached")),
                        sum(p.seconds for p in parts))
        rank = np.lexsort((coarse.norms, ~coarse.reached))  # reached first, then by norm
        classes = np.sort(rank[:shortlist])
    full = search(net, x, classes, steps, seed=seed)
    index = anomaly_index(full.norms)
    settings = {"faces": len(x), "steps": steps, "learning_rate": LEARNING_RATE, "cost": COST,
                "success": SUCCESS, "anomaly": ANOMALY, "shortlist": shortlist, "seed": seed}
    if coarse is not None:
        settings.update(coarse_faces=COARSE_FACES, coarse_steps=COARSE_STEPS)
    return Cleansed(full, index, full.classes[flagged(full.norms)], n, coarse,
                    time.perf_counter() - start, settings)


def check_count(name: str, value, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise LabError(f"{name} {value!r}: give a whole number of at least {least}")
    return int(value)


def unlearn(net: Net, valid: Split, result: Cleansed, share: float = STAMPED_SHARE,
            seed: int = SEED, progress: bool = False, **settings):
    """The repair by unlearning: `finetune.fine_tune` on the clean validation faces with `share`
    of them (drawn anew for each augmented copy) stamped with the trigger of a flagged class (each
    flagged class in turn) and labelled with their true class. Returns a `finetune.FineTuned`, or
    None when nothing was flagged (no trigger to unlearn). `settings` (steps, ...) go to
    `finetune.store`."""
    from .finetune import fine_tune, store

    if not len(result.flagged):
        return None
    triggers = [result.trigger(c) for c in result.flagged]

    def stamped(faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # faces 0..1
        chosen = np.flatnonzero(rng.random(len(faces)) < share)
        for k, (mask, pattern) in enumerate(triggers):
            part = chosen[k::len(triggers)]
            faces[part] = stamp(faces[part], mask, pattern / 255)
        return faces

    tuned = fine_tune(net, store(net, valid, seed=seed, stamp=stamped, **settings), progress=progress)
    tuned.net.name = f"{net.name}_unlearned"
    return tuned


def save_unlearned(tuned, result: Cleansed, path: Path | str, protect: tuple = ()) -> list[Path]:
    """Write the repaired network (`.h5`, the course's format) and a JSON record beside it."""
    from .finetune import check_finite

    check_finite(tuned.net, "unlearning")
    src = tuned.source
    guard = (*protect, *([src] if src else []))
    path = save_model(tuned.net, path, protect=guard)
    info = {"method": "Neural Cleanse unlearning (Wang et al., IEEE S&P 2019)",
            "flagged_classes": result.flagged.tolist(), "stamped_share": STAMPED_SHARE,
            "neural_cleanse": result.settings, **tuned.settings,
            "watch_accuracy_before": float(tuned.history.watch_accuracy.iloc[0]),
            "watch_accuracy_after": float(tuned.history.watch_accuracy.iloc[-1]),
            "input_scale": tuned.net.scale, "source_model": str(src) if src else None,
            "source_sha256": file_sha256(src) if src and Path(src).is_file() else None}
    return [path, write_json(Path(path).with_suffix(".json"), info, protect=guard, partner=path)]
