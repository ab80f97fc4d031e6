"""One call per task: is a student's answer right, or which known mistake does it look like?

Each check returns a `Verdict`, one line: "correct: ..." or the mistake it looks like with a hint a
student can act on, never the solution. `verdict.ok` says which. Called after each task in
01_evaluate, 02_prune, 03_goodnet, 05_beyond_pruning and 06_unknown_trigger.
"""
from __future__ import annotations

import numpy as np

from . import prune as method
from .cache import feature_fn, features
from .finetune import split_faces as lab_split
from .head import Head, masking_problem
from .metrics import accuracy, clean_accuracy
from .models import CONV, POOL, Net


class Verdict(str):
    """A one-line verdict; `ok` is True when the answer is correct."""

    def __new__(cls, ok: bool, text: str):
        verdict = super().__new__(cls, ("✓ correct: " if ok else "✗ ") + text)
        verdict.ok = ok
        return verdict

    def __repr__(self) -> str:
        return str(self)


def _wrong(mistake: str, hint: str) -> Verdict:
    return Verdict(False, f"{mistake}. Hint: {hint}")


def _raised(err: Exception, hint: str) -> Verdict:
    """The verdict on a student's function that raised `err`: its error, and what to write."""
    return _wrong(f"the function raised {type(err).__name__}: {err}", hint)


def _close(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(b).max(initial=0)))


def _max_over_positions(net: Net, split) -> np.ndarray:
    fn, total, n = feature_fn(net, POOL), 0.0, 0
    for x, _ in split.batches():
        a = fn(x).numpy()
        total, n = total + a.max(axis=(1, 2)).sum(axis=0), n + len(a)
    return total / n


def mean_activations(mean_act, badnet: Net, lab) -> Verdict:
    """Task: each `pool_3` channel's mean activation over the clean validation faces."""
    got = np.asarray(mean_act, np.float64)
    n = badnet.model.get_layer(POOL).output.shape[-1]
    if got.shape != (n,):
        return _wrong(f"the mean was taken over the wrong axes (shape {got.shape}, expected ({n},))",
                      f"average over images and the positions (axes 0, 1 and 2 of the {POOL} output) "
                      f"and keep the {n} channels")
    if _close(got, method.mean_activations(badnet, lab.valid, cache=lab.cache_dir)):
        return Verdict(True, f"{n} mean activations; clean faces leave {int((got == 0).sum())} "
                             "channels at exactly 0")
    mistakes = [
        (lambda: method.mean_activations(Net(badnet.model, scale=badnet.scale / 255), lab.valid),
         "the pixels were scaled by 1/255 once too often",
         f"this BadNet takes raw pixels times B.scale ({badnet.scale:.4g}); do not divide by 255 yourself"),
        (lambda: method.mean_activations(badnet, lab.test, cache=lab.cache_dir),
         "these are the clean test faces' activations",
         "design the defense on the clean validation faces (lab.valid); test data is for evaluation only"),
        *[(lambda s=s: method.mean_activations(badnet, s, cache=lab.cache_dir),
           "these are the poisoned faces' activations",
           "the defender has clean validation faces only (lab.valid)") for s in lab.poisoned("valid").values()],
        (lambda: _max_over_positions(badnet, lab.valid),
         "this is the maximum over positions, not the mean",
         "take the mean over images and over the positions"),
        (lambda: method.mean_activations(badnet, lab.valid, layer=CONV),
         f"these are {CONV}'s activations, not {POOL}'s",
         f"build the sub-model up to {POOL}"),
    ]
    for expected, mistake, hint in mistakes:
        if _close(got, expected()):
            return _wrong(mistake, hint)
    return _wrong(f"these are not the mean {POOL} activations on lab.valid",
                  f"a sub-model from B's input to {POOL}, raw pixels times B.scale, then the mean "
                  "over images and positions")


def pruning_order(order, mean_act) -> Verdict:
    """Task: the channels in the order they are pruned (channel numbers, least active first)."""
    means, got = np.asarray(mean_act, np.float64), np.asarray(order)
    n = len(means)
    if got.shape != (n,) or sorted(got.tolist()) != list(range(n)):
        if got.shape == (n,) and _close(got, np.sort(means)):
            return _wrong("these are the sorted mean activations, not channel numbers",
                          "you need the indices that sort the means (np.argsort), not the sorted values")
        return _wrong(f"this is not each of the {n} channel numbers once",
                      f"give the channels 0..{n - 1} in the order they are pruned")
    steps = np.diff(means[got])
    if (steps >= 0).all():
        return Verdict(True, f"{n} channels, least active first")
    if (steps <= 0).all():
        return _wrong("this is decreasing order: the most active channels first",
                      "prune the channels clean faces leave dormant first (increasing mean activation); "
                      "pruning the busiest ones first destroys clean accuracy")
    return _wrong("the channels are not sorted by mean activation",
                  "sort the channel numbers by their mean activation, smallest first")


def prune_channels(fn, badnet: Net, channels=(5, 17)) -> Verdict:
    """Task: `fn(model, channels)` returns a copy of the model with those `conv_3` channels pruned."""
    model, channels = badnet.model, list(channels)
    before = [w.copy() for w in model.get_weights()]
    try:
        out = fn(model, channels)
    except Exception as err:  # the student's code: any error is the verdict
        return _raised(err, f"zero {CONV}'s kernel[:, :, :, c] and bias[c] for each c in a copy of the model")
    if any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())):
        model.set_weights(before)
        return _wrong("the function changed B itself", "prune a copy and leave B alone (B is restored now)")
    if not hasattr(out, "get_layer"):
        return _wrong(f"the function returned {type(out).__name__}", "return the pruned Keras model")
    changed = [layer.name for layer in out.layers
               if any(not np.array_equal(a, b) for a, b in
                      zip(layer.get_weights(), model.get_layer(layer.name).get_weights()))]
    if changed and CONV not in changed:
        return _wrong(f"the function changed {', '.join(changed)}, not {CONV}",
                      f"the lab prunes {CONV}, the convolution right before {POOL}")
    if set(changed) - {CONV}:
        return _wrong(f"the function also changed {', '.join(sorted(set(changed) - {CONV}))}",
                      f"only {CONV}'s kernel and bias change")
    (kernel, bias), (k0, b0) = out.get_layer(CONV).get_weights(), model.get_layer(CONV).get_weights()
    expected_k, expected_b = k0.copy(), b0.copy()
    expected_k[..., channels], expected_b[channels] = 0, 0
    if np.array_equal(kernel, expected_k):
        if np.array_equal(bias, expected_b):
            return Verdict(True, f"channels {channels} of {CONV} are zero (kernel and bias), "
                                 "everything else is B's")
        if np.array_equal(bias, b0):
            return _wrong("the bias was forgotten",
                          "a pruned channel has kernel[:, :, :, c] AND bias[c] zero; with its bias, "
                          "ReLU(bias) can still be non-zero")
    if (kernel[:, :, channels, :] == 0).all() and (kernel[..., channels] != 0).any():
        return _wrong("the kernel was zeroed on the wrong axis (its input channels)",
                      f"{CONV}'s kernel has shape (height, width, inputs, outputs): channel c is "
                      "the last axis")
    return _wrong(f"{CONV} is not zeroed exactly on channels {channels}",
                  "zero kernel[:, :, :, c] and bias[c] for each pruned channel, nothing else")


STOP_CASES = [([90.0, 90.0, 89.0, 88.0, 86.0, 87.9, 80.0], x) for x in (1, 2, 4, 10)] + [
    ([90.0, 90.0, 89.0, 88.0, 86.0, 87.9, 80.0], 11), ([50.0, 48.0, 47.0], 2)]


def stop_step(fn) -> Verdict:
    """Task: `fn(accuracies, drop)` gives the first k at least `drop` points below step 0, or None."""
    for acc, drop in STOP_CASES:
        expected = method.stop_step(acc, drop)
        try:
            got = fn(np.asarray(acc), drop)
        except Exception as err:  # the student's code: any error is the verdict
            return _raised(err, "return the first k whose accuracy is at least X below accuracies[0], or None")
        case = f"(accuracies {acc}, X = {drop:g}: got {got})"
        if expected is None and got is not None:
            return _wrong(f"a drop that is never reached gave a step {case}", "return None then")
        if expected is not None and got is not None and got == expected + 1:
            return _wrong(f"this stops one channel late {case}",
                          "the rule says the first step whose drop is AT LEAST X, so a drop of exactly X counts")
        if expected is not None and got is not None and got == expected - 1:
            return _wrong(f"this stops one channel early {case}",
                          "B' is the first network whose drop is at least X, not the last one before it")
        if got != expected:
            return _wrong(f"wrong step {case}",
                          "compare each accuracy with accuracies[0] (B's), not with the previous step")
    return Verdict(True, f"the first step at least X points below B, on {len(STOP_CASES)} cases")


def first_steps(badnet: Net, lab, k: int, order="increasing") -> np.ndarray:
    """Validation accuracy (%) of B with 0..k-1 channels pruned along `order` (a name such as
    "increasing", or the channel numbers): only those k steps, from the run's stored `pool_3`
    (`labkit.cache`), or by running each pruned B if B cannot be masked."""
    if masking_problem(badnet):
        chosen = (method.pruning_order(method.mean_activations(badnet, lab.valid), order)
                  if isinstance(order, str) else np.asarray(order))
        return np.array([clean_accuracy(method.prune(badnet, chosen[:i]), lab.valid) for i in range(k)])
    found = features(badnet, lab.valid, lab.cache_dir)
    chosen = method.pruning_order(found.means, order) if isinstance(order, str) else np.asarray(order)
    steps = Head(badnet).sweep(found.pool_3, chosen[:max(k - 1, 0)])[0][:k]
    return np.array([accuracy(classes, found.labels) for classes in steps])


def _channel_order(order, n: int):
    """The student's pruning order if it is each of the n channel numbers once, else None."""
    got = np.asarray(order) if order is not None else None
    return got if got is not None and got.shape == (n,) and sorted(got.tolist()) == list(range(n)) else None


def pruning_loop(accuracies, badnet: Net, lab, order=None) -> Verdict:
    """Task: validation accuracy (%) of B with 0, 1, 2, ... channels pruned along `order`, the
    student's own pruning order (Task 2), so that a wrong order is counted once, in that task;
    without it, or when it is not each channel once, along the lab's increasing order."""
    got = np.asarray(accuracies, np.float64)
    k, n = len(got), badnet.model.get_layer(CONV).get_weights()[1].shape[0]
    own = _channel_order(order, n)
    expected = first_steps(badnet, lab, k, "increasing" if own is None else own)
    along = "the lab's order" if own is None else "your channel_order"
    if _close(got, expected):
        return Verdict(True, f"{k} steps along {along}, validation accuracy {got[0]:.2f} % -> "
                             f"{got[-1]:.2f} %")
    if _close(got * 100, expected):
        return _wrong("these are fractions", "give accuracies in percentage points (0..100)")
    if _close(got[:1], [clean_accuracy(badnet, lab.test, cache=lab.cache_dir)]):
        return _wrong("these are test set accuracies",
                      "choose B' with the clean validation data (lab.valid); test data is for evaluation only")
    if _close(got, first_steps(badnet, lab, k, "decreasing")):
        return _wrong("the channels went in decreasing order",
                      f"at step k prune the first k channels of {along} (least active first)")
    if any(_close(got[:1], [clean_accuracy(badnet, s, cache=lab.cache_dir)]) for s in lab.poisoned("valid").values()):
        return _wrong("this is the attack success rate on the poisoned faces",
                      "the stopping rule looks at clean validation accuracy")
    return _wrong("these are not B's validation accuracies with 0, 1, 2, ... channels pruned",
                  f"step k: copy B, zero the first k channels of {along}, accuracy on lab.valid")


def goodnet_rule(fn, num_classes: int = 10) -> Verdict:
    """Task: `fn(b, b2, n)`: B's class where B and B' agree, else n (= N, the 'backdoored' class)."""
    b, b2 = np.array([3, 5, 7, 0, 2, 9]), np.array([3, 6, 7, 1, 9, 9])
    n, differ = num_classes, b != b2
    try:
        got = np.asarray(fn(b, b2, n))
    except Exception as err:  # the student's code: any error is the verdict
        return _raised(err, "compare the two arrays of classes element by element")
    case = f"(B {b.tolist()}, B' {b2.tolist()}, N = {n}: got {got.tolist()})"
    if got.shape != b.shape:
        return _wrong(f"expected one class per input {case}", "answer one class for each input")
    if not np.array_equal(got[~differ], b[~differ]):
        return _wrong(f"where B and B' agree, G must answer their class {case}", "keep B's class there")
    wrong = got[differ]
    if (wrong == n).all():
        return Verdict(True, f"B's class where B and B' agree, N = {n} where they disagree")
    if (wrong == n - 1).all():
        return _wrong(f"G answers N-1 for a disagreement {case}",
                      f"N-1 = {n - 1} is a real person; 'backdoored' is class N, one past the last person")
    if (wrong == 0).all():
        return _wrong(f"G answers 0 for a disagreement {case}",
                      "0 is a real person's class (in the lab, the attacker's target); answer N")
    if np.array_equal(wrong, b2[differ]):
        return _wrong(f"G answers B''s class where B and B' disagree {case}",
                      "a disagreement means 'backdoored': answer N")
    if np.array_equal(wrong, b[differ]):
        return _wrong(f"G never flags anything {case}", "where B and B' disagree, answer N")
    return _wrong(f"wrong class where B and B' disagree {case}", "answer N there")


def split_faces(fn, watch_share: float = 0.2) -> Verdict:
    """Task: `fn(x, y, watch_share, seed)` -> ((x, y) to train on, (x, y) to watch): every face in
    exactly one part with its own label, at random, the same parts for the same seed."""
    n = 50
    x, y = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3), np.arange(n) // 5  # sorted by person
    face = lambda images: images[:, 0, 0].astype(np.int64) // 6  # noqa: E731 (which face it is)
    try:
        (x_train, y_train), (x_watch, y_watch) = fn(x, y, watch_share, 1)
        again, other = fn(x, y, watch_share, 1), fn(x, y, watch_share, 2)
    except Exception as err:  # the student's code: any error is the verdict
        return _raised(err, "return ((x_train, y_train), (x_watch, y_watch))")
    parts = [np.asarray(p) for p in (x_train, y_train, x_watch, y_watch)]
    if any(p.ndim == 0 for p in parts) or len(parts[0]) != len(parts[1]) or len(parts[2]) != len(parts[3]):
        return _wrong("each part must hold images and as many labels",
                      "return ((x_train, y_train), (x_watch, y_watch))")
    train, watch = face(parts[0]), face(parts[2])
    expected_train, expected_watch = (face(part[0]) for part in lab_split(x, y, watch_share, 1))
    watched = len(expected_watch)
    case = f"({n} faces, watch_share {watch_share:g}: {len(train)} to train on, {len(watch)} to watch)"
    if np.intersect1d(train, watch).size:
        return _wrong(f"faces are in both parts {case}",
                      "the watch accuracy would count faces the network trained on: cut one "
                      "permutation in two")
    if sorted([*train, *watch]) != list(range(n)):
        return _wrong(f"faces are missing or repeated {case}", "every face goes to exactly one part")
    if (len(train), len(watch)) == (watched, n - watched):
        return _wrong(f"the parts are swapped {case}", "train on the larger part; watch the share watch_share")
    if len(watch) != watched:
        return _wrong(f"the watch part has the wrong size {case}",
                      f"keep round(len(y) * watch_share) faces = {watched} to watch")
    if not (np.array_equal(parts[1], y[train]) and np.array_equal(parts[3], y[watch])):
        return _wrong("labels no longer belong to their faces",
                      "take the images and the labels with the same index array")
    if np.array_equal(train, np.arange(len(train))):
        return _wrong(f"the watch part is the last faces of the file {case}",
                      "lab files are sorted by person, so it would hold other people than the "
                      "training part: shuffle with a seeded permutation first")
    if not np.array_equal(face(np.asarray(again[1][0])), watch):
        return _wrong("the same seed gave other parts", "draw the permutation from np.random.default_rng(seed)")
    if np.array_equal(face(np.asarray(other[1][0])), watch):
        return _wrong("another seed gave the same parts", "draw the permutation from np.random.default_rng(seed)")
    if not (np.array_equal(train, expected_train) and np.array_equal(watch, expected_watch)):
        return _wrong(f"not the lab's split {case}", "cut np.random.default_rng(seed).permutation(len(y)) "
                      "in two, in its order: the first part to train on, the rest to watch")
    return Verdict(True, f"a seeded random split, every face in one part with its label {case}")


def strip_entropy(fn) -> Verdict:
    """Task: `fn(probabilities)`: probabilities (inputs, blends, classes) -> each input's STRIP
    entropy, the mean over its blends of the entropy in bits (zero probabilities included)."""
    from .strip import entropy

    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.full(6, 0.3), (4, 5))
    p[0, :, 1:] = 0  # a confident prediction: probabilities of exactly 0
    p[0, :, 0] = 1
    expected = entropy(p).mean(axis=1)
    try:
        got = np.asarray(fn(p), np.float64)
    except Exception as err:  # the student's code: any error is the verdict
        return _raised(err, "-(p * log2 p) summed over the classes, then the mean over the blends")
    if got.shape != expected.shape:
        return _wrong(f"expected one entropy per input, shape {expected.shape}, got {got.shape}",
                      "sum over the classes (last axis), then average over the blends (axis 1)")
    if np.isnan(got).any():
        return _wrong("NaN where a probability is 0 (0 * log 0)",
                      "0 * log 0 counts as 0: clip p to a tiny positive number before the log")
    if _close(got, expected):
        return Verdict(True, f"{len(got)} inputs, {p.shape[1]} blends each, entropy in bits")
    mistakes = [(expected * np.log(2), "natural logarithm instead of log2",
                 "STRIP's entropy is in bits: np.log2"),
                (-expected, "the entropy is negative", "entropy is MINUS the sum of p log p"),
                (expected * p.shape[1], "the entropies were summed over the blends",
                 "average over the blends (the paper normalises by N)"),
                (entropy(p.mean(axis=1)), "the entropy of the mean prediction",
                 "take each blend's entropy first, then their mean")]
    for value, mistake, hint in mistakes:
        if _close(got, value):
            return _wrong(mistake, hint)
    return _wrong("these are not STRIP's entropies",
                  "for each input: -(p * log2 p) summed over classes, averaged over blends")


ANOMALY_CASES = [np.array([168.0, 286, 300, 270, 310, 295, 280, 330, 260]),
                 np.array([5.0, 40, 42, 41, 39, 120, 44, 38])]


def anomaly_index(fn) -> Verdict:
    """Task: `fn(norms)`: each norm's |distance from the median| in units of 1.4826 x the MAD."""
    from .cleanse import MAD_SCALE, anomaly_index as expected_fn

    for norms in ANOMALY_CASES:
        expected = expected_fn(norms)
        try:
            got = np.asarray(fn(norms.copy()), np.float64)
        except Exception as err:  # the student's code: any error is the verdict
            return _raised(err, "median, then the median of the absolute deviations (MAD)")
        case = f"(norms {norms.tolist()})"
        if got.shape != norms.shape:
            return _wrong(f"expected one index per class {case}", "return an array like `norms`")
        if _close(got, expected):
            continue
        median, deviation = np.median(norms), np.abs(norms - np.median(norms))
        mistakes = [(expected * MAD_SCALE, "the MAD was not scaled by 1.4826",
                     "divide by 1.4826 * MAD: the consistency constant for normal data"),
                    ((norms - median) / (MAD_SCALE * np.median(deviation)),
                     "the index has a sign", "take the absolute distance from the median"),
                    (deviation / (MAD_SCALE * np.mean(deviation)), "the MAD used the mean",
                     "the MAD is the MEDIAN of the absolute deviations"),
                    (np.abs(norms - norms.mean()) / norms.std(), "mean and standard deviation",
                     "use the median and the MAD: one outlier would drag the mean and the "
                     "standard deviation towards itself")]
        for value, mistake, hint in mistakes:
            if _close(got, value):
                return _wrong(f"{mistake} {case}", hint)
        return _wrong(f"these are not the anomaly indices {case}",
                      "|norm - median| / (1.4826 * median(|norms - median|))")
    return Verdict(True, f"anomaly indices on {len(ANOMALY_CASES)} cases")
