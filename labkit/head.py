"""The layers after `pool_3` in numpy, updated channel by channel as `conv_3` channels are pruned.

After `pool_3` the lab's network is fc_1 (on pool_3, flattened) and conv_4 (ReLU, on pool_3),
then fc_2 (on conv_4, flattened), add, ReLU and the output layer. fc_1 and conv_4 are linear in
`pool_3` before their activations, so pruning channel c subtracts exactly c's part from their
sums: a few thousand multiply-adds per image instead of recomputing both layers (about half of
the layers' work). Those two sums are kept in float64, so 60 subtractions stay nearer to the
exact value than the pruned network's own float32 sums; fc_2 and the output layer run in
float32, as Keras runs them. The classes equal the pruned network's up to argmax near-ties,
where two float32 computations of one network may already disagree (`tests/test_prune.py` and
`labkit bench` compare them with the zeroed-weights network image by image).
"""
from __future__ import annotations

import numpy as np

from .models import CONV, POOL, Net

LAYERS = {"fc_1": ("Dense", "linear", "flatten_1"), "conv_4": ("Conv2D", "relu", "pool_3"),
          "fc_2": ("Dense", "linear", "flatten_2"), "output": ("Dense", "softmax", "activation_1")}
CHUNK = 512  # images at a time: keeps the float64 sums small (memory) and in the cache


def head_problem(model) -> str | None:
    """Why the layers after `pool_3` are not the lab's (so `Head` cannot run them), or None."""
    for name, (kind, activation, source) in LAYERS.items():
        try:
            layer = model.get_layer(name)
            ok = (type(layer).__name__ == kind and layer.get_config().get("activation") == activation
                  and layer.input is model.get_layer(source).output)
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            return f"the layers after pool_3 are not the lab's ({name})"
    add, relu = model.get_layer("add_1"), model.get_layer("activation_1")
    if ([t is model.get_layer(n).output for t, n in zip(add.input, ("fc_1", "fc_2"))] != [True, True]
            or relu.input is not add.output or relu.get_config().get("activation") != "relu"
            or model.outputs[0] is not model.get_layer("output").output):
        return "the layers after pool_3 are not the lab's (add_1)"
    return None


def masking_problem(net: Net) -> str | None:
    """Why masking `pool_3` would not give the pruned network's output exactly, or None if it does.

    It does when `conv_3` is a ReLU convolution (a zeroed channel is exactly 0), `pool_3`
    max-pools `conv_3`'s output directly (so that channel stays 0), and the layers after
    `pool_3` are the lab's (`head_problem`).
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
    return head_problem(model)


class Head:
    """B's layers after `pool_3`, on stored `pool_3` activations (images, height, width, channels)."""

    def __init__(self, net):
        m = net.model
        (w1, b1), (w4, b4) = ([w.astype(np.float64) for w in m.get_layer(n).get_weights()]
                              for n in ("fc_1", "conv_4"))
        (self.w2, self.b2), (self.w3, self.b3) = (m.get_layer(n).get_weights() for n in ("fc_2", "output"))
        self.w1, self.b1, self.w4, self.b4 = w1, b1, w4, b4  # float64: see the module's docstring
        channels = w4.shape[2]
        self.w1c = [w1[c::channels] for c in range(channels)]  # rows of channel c (Flatten's order)
        self.w4c = [w4[:, :, c].reshape(-1, w4.shape[-1]) for c in range(channels)]

    def sums(self, acts: np.ndarray):
        """fc_1's and conv_4's sums before their activations (float64), biases included."""
        a = acts.astype(np.float64)
        z1 = a.reshape(len(a), -1) @ self.w1 + self.b1
        kh, kw = self.w4.shape[:2]
        h, w = a.shape[1] - kh + 1, a.shape[2] - kw + 1
        z4 = np.broadcast_to(self.b4, (len(a), h, w, len(self.b4))).copy()
        for i in range(kh):
            for j in range(kw):
                z4 += a[:, i:i + h, j:j + w] @ self.w4[i, j]
        return z1, z4

    def remove(self, z1, z4, acts_c: np.ndarray, c: int):
        """Subtract channel c's part (its `pool_3` maps `acts_c`, (n, h, w)) from the two sums,
        in place: its rows of fc_1's kernel, and its slice of conv_4's kernel on each 2x2 patch."""
        kh, kw = self.w4.shape[:2]
        h, w = z4.shape[1:3]
        z1 -= acts_c.reshape(len(acts_c), -1) @ self.w1c[c]
        patches = np.stack([acts_c[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], -1)
        z4 -= patches @ self.w4c[c]

    def classes(self, z1, z4) -> np.ndarray:
        """The output layer's argmax from the two sums: ReLU, fc_2, add, ReLU, output (float32)."""
        fc_2 = np.maximum(z4, 0).astype(np.float32).reshape(len(z4), -1) @ self.w2 + self.b2
        hidden = np.maximum(z1.astype(np.float32) + fc_2, 0)
        return (hidden @ self.w3 + self.b3).argmax(axis=1).astype(np.int32)

    def predict(self, acts: np.ndarray, pruned=()) -> np.ndarray:
        """Classes of B with the `conv_3` channels `pruned` zeroed, from B's `pool_3` `acts`."""
        keep = np.ones(acts.shape[-1], np.float32)
        keep[np.asarray(pruned, np.int64)] = 0
        return np.concatenate([self.classes(*self.sums(acts[i:i + CHUNK] * keep))
                               for i in range(0, len(acts), CHUNK)] or [np.zeros(0, np.int32)])

    def sweep(self, acts: np.ndarray, order, bar=None) -> np.ndarray:
        """Classes (len(order) + 1, images) of B_k, k = 0..len(order) channels pruned in `order`,
        and how many images went through fc_2 and the output layer (all steps together).

        Pruning channel c changes only the images where c is non-zero somewhere in `pool_3`;
        the others keep their previous class.
        """
        preds, work = np.empty((len(order) + 1, len(acts)), np.int32), len(acts)
        for start in range(0, len(acts), CHUNK):
            a = acts[start:start + CHUNK]
            z1, z4 = self.sums(a)
            p = preds[:, start:start + len(a)]
            p[0] = self.classes(z1, z4)
            active = a.any(axis=(1, 2))
            for k, c in enumerate(order, start=1):
                changed = np.flatnonzero(active[:, c])
                p[k] = p[k - 1]
                work += changed.size
                if changed.size:
                    y1, y4 = z1[changed], z4[changed]
                    self.remove(y1, y4, a[changed, ..., c].astype(np.float64), c)
                    z1[changed], z4[changed] = y1, y4
                    p[k, changed] = self.classes(y1, y4)
            if bar is not None:
                bar.update(len(a))
        return preds, work
