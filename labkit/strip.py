"""STRIP: a backdoor detector at inference (Gao, Xu, Wang, Chen, Ranasinghe & Nepal, "STRIP: a defence
against trojan attacks on deep neural networks", ACSAC 2019).

Each input is superimposed on N clean faces (the paper's superimposition: the two images added
pixel by pixel, clipped to 0..255) and B classifies every blend. A clean face loses its identity
in the blends, so B's predictions spread over many classes: high entropy. A face wearing the
trigger keeps sending B to the target class, whatever it is blended with: low entropy. The input's
entropy is the mean over its N blends of the entropy (bits) of B's softmax probabilities.

Only clean validation faces are used to design the detector: a seeded set of N of them to blend
with, and the rest to set the threshold, the entropy that `frr` (1 % by default) of them fall
below. An input below the threshold is flagged as poisoned. At the lab's size (11,547 validation
and 12,830 faces per test file) every face costs N predictions, so at most FACES faces of each
file are measured, a seeded sample: 1 % of 2,000 is 20 faces, enough to set and check a 1 % rate.
Shown in 06_unknown_trigger.ipynb; `labkit strip` runs it on the course's files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .data import Split, require
from .errors import LabError
from .models import Net

BLENDS = 20  # N: clean faces each input is superimposed on (the paper used 100; 20 for speed)
FRR = 1.0  # false rejection rate (%) on clean validation faces that sets the threshold
SEED = 0  # which validation faces are blended with
WEIGHTS = (1.0, 1.0)  # the input's and the clean face's weight in a blend (the paper adds them)
CHUNK = 4096  # blends classified at once
FACES = 2000  # at most this many faces of a file are measured (a seeded sample); None: all


def superimpose(images: np.ndarray, blend_faces: np.ndarray, weights=WEIGHTS) -> np.ndarray:
    """Every image superimposed on every blend face, (n, N, 55, 47, 3): `weights` (a, b) give
    a * image + b * face, clipped to 0..255; the paper's (1, 1) adds them."""
    a, b = weights
    return np.clip(a * images[:, None] + b * blend_faces[None], 0, 255)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row of probabilities (last axis): -sum p log2 p."""
    p = np.asarray(probabilities, np.float64)
    return -(p * np.log2(np.clip(p, 1e-12, None))).sum(axis=-1)


def strip_entropy(net: Net, images: np.ndarray, blend_faces: np.ndarray,
                  weights=WEIGHTS) -> np.ndarray:
    """STRIP's entropy of each raw 0..255 input: the mean over its blends of B's entropy."""
    images = np.asarray(images, np.float32)
    per = max(1, CHUNK // len(blend_faces))  # inputs per chunk
    out = [entropy(net.probabilities(superimpose(images[i:i + per], blend_faces, weights)
                                     .reshape(-1, *images.shape[1:])))
           .reshape(-1, len(blend_faces)).mean(axis=1)
           for i in range(0, len(images), per)]
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class Strip:
    """A STRIP detector: B, the clean faces it blends with and its threshold (bits)."""

    net: Net
    blend_faces: np.ndarray  # (N, 55, 47, 3), raw 0..255
    threshold: float  # an input whose entropy is below this is flagged
    frr: float  # the false rejection rate (%) on clean validation faces that set the threshold
    valid_entropy: np.ndarray = field(repr=False)  # of the validation faces that set it
    weights: tuple = WEIGHTS  # see `superimpose`

    def entropy(self, images: np.ndarray) -> np.ndarray:
        return strip_entropy(self.net, images, self.blend_faces, self.weights)

    def flags(self, images: np.ndarray) -> np.ndarray:
        """True where an input is flagged as poisoned (its entropy is below the threshold)."""
        return self.entropy(images) < self.threshold


def check_frr(frr) -> float:
    if isinstance(frr, bool) or not isinstance(frr, (int, float)) or not 0 < frr < 100:
        raise LabError(f"false rejection rate {frr!r}: give a percentage above 0 and below 100 "
                       f"(default {FRR:g})")
    return float(frr)


def check_blends(blends, available: int) -> int:
    if isinstance(blends, bool) or not isinstance(blends, (int, np.integer)) or blends < 1:
        raise LabError(f"blends {blends!r}: give a whole number of at least 1 (default {BLENDS})")
    if blends >= available:
        raise LabError(f"blends {blends}: the validation file has only {available} faces, and "
                       "some must remain to set the threshold; give fewer")
    return int(blends)


def check_faces(faces) -> int | None:
    if faces is not None and (isinstance(faces, bool) or not isinstance(faces, (int, np.integer))
                              or faces < 1):
        raise LabError(f"faces {faces!r}: give a whole number of at least 1, or None for all "
                       f"(default {FACES})")
    return faces


def fit(net: Net, valid: Split, blends: int = BLENDS, frr: float = FRR, seed: int = SEED,
        weights=WEIGHTS, faces: int | None = FACES) -> Strip:
    """STRIP for B, designed on the clean validation faces only (see the module's text): `faces`
    of those not blended with set the threshold."""
    frr, faces = check_frr(frr), check_faces(faces)
    x, _ = require(valid, "validation", "STRIP").load()
    blends = check_blends(blends, len(x))
    order = np.random.default_rng([seed, 23]).permutation(len(x))
    blend_faces, rest = x[order[:blends]], x[order[blends:][:faces]]
    h = strip_entropy(net, rest, blend_faces, weights)
    return Strip(net, blend_faces, float(np.percentile(h, frr)), frr, h, tuple(weights))


@dataclass
class StripResult:
    """What STRIP flags on the test files (percentages) and each file's entropies."""

    detector: Strip
    false_rejection: float  # % of clean test faces flagged
    detection: dict  # trigger name -> % of its poisoned test faces flagged
    entropies: dict  # "clean" and each trigger name -> entropies of its test faces measured
    sizes: dict = field(default_factory=dict)  # "clean" and each trigger name -> faces in its file
    seconds: float = 0.0

    def _of(self, name: str) -> str:
        n, size = len(self.entropies[name]), self.sizes.get(name, len(self.entropies[name]))
        return "" if n == size else f", {n} of {size} measured"

    def lines(self) -> list[str]:
        d = self.detector
        return ([f"STRIP: {len(d.blend_faces)} blends per face; threshold {d.threshold:.4f} bits "
                 f"(false rejection {d.frr:g} % on {len(d.valid_entropy)} clean validation faces)",
                 f"  false rejections (clean test faces flagged{self._of('clean')}): "
                 f"{self.false_rejection:.2f} %"]
                + [f"  detections ({name} test faces flagged{self._of(name)}): {rate:.2f} %"
                   for name, rate in self.detection.items()])


def evaluate(detector: Strip, test: Split, poisoned: dict, faces: int | None = FACES,
             seed: int = SEED) -> StripResult:
    """False rejections on the clean test faces and detections on each poisoned test file, each
    on at most `faces` of its faces (a seeded sample).

    `poisoned` = {trigger name: Split} (test splits only; it may be empty).
    """
    start, faces = time.perf_counter(), check_faces(faces)
    files = {"clean": require(test, "test", "STRIP's evaluation"),
             **{n: require(s, "test", "STRIP's evaluation") for n, s in poisoned.items()}}
    if "clean" in poisoned:
        raise LabError("a trigger named 'clean': that name is taken by the clean test faces")
    sizes = {name: len(split) for name, split in files.items()}
    h = {name: detector.entropy(_sample(split, faces, seed)) for name, split in files.items()}
    rate = {name: 100.0 * float(np.mean(v < detector.threshold)) for name, v in h.items()}
    return StripResult(detector, rate.pop("clean"), rate, h, sizes, time.perf_counter() - start)


def _sample(split: Split, faces: int | None, seed: int) -> np.ndarray:
    """The raw images of `split`: all of them, or a seeded sample of `faces` of them."""
    n = len(split)
    if faces is None or n <= faces:
        return split.load()[0]
    return split.images(np.random.default_rng([seed, 25]).choice(n, faces, replace=False))[0]
