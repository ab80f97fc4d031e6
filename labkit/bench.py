"""`labkit bench`: the masked pruning sweep against the loop students write, at the lab's size.

Random images are written to HDF5 files of the lab's format and size in a temporary folder. The
fast sweep runs on them (all 60 steps, every column), then a few steps of the naive loop are
timed: copy B, zero the channels pruned so far, predict every file with the full network
(`model.predict`, as in the students' notebooks). Both must predict the same classes.
"""
from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from .data import CHANNELS_FIRST, LAB_FILES, Split, project_root
from .models import Net, build_badnet, load_model
from .prune import CONV, prune
from .sweep import sweep

LAB_SIZES = {"valid": 11547, "test": 12830, "bd_test": 12830}  # images in the real lab's files
NAIVE_STEPS = 5  # naive steps timed; a step costs the same whatever k is
CHUNK = 1024  # images written at once


def lab3_weights() -> Path:
    """Where the real lab's BadNet weights are, beside the checkout."""
    return project_root().parent / "shared" / "real" / "lab3_bd_weights.h5"


def _badnet() -> tuple[Net, str]:
    if lab3_weights().is_file():
        return load_model(lab3_weights()), "the lab's BadNet (lab3_bd_weights.h5)"
    import keras

    keras.utils.set_random_seed(0)
    return Net(build_badnet(1283), name="random"), "random weights, the lab's architecture"


def write_random_split(path: Path, n: int, num_classes: int, poisoned: bool, seed: int) -> Split:
    """A lab file of `n` random images (pixels 0..255), written in chunks to keep memory low."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", (n, *CHANNELS_FIRST), np.float32)
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            data[start:start + m] = rng.integers(0, 256, (m, *CHANNELS_FIRST)).astype(np.float32)
        labels = np.zeros(n) if poisoned else rng.integers(0, num_classes, n)
        f.create_dataset("label", data=labels.astype(np.float64))
    return Split(path, LAB_FILES[path.stem][1], poisoned)  # the kind of the lab file of that name


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (getrusage ru_maxrss), in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10  # bytes vs KiB


def _naive_step(badnet: Net, channels, data: dict) -> dict:
    """One step of the students' loop: copy B, zero the channels, predict every file."""
    net = prune(badnet, channels)  # copies B and zeroes the conv_3 channels
    model = net.model
    return {name: model.predict(x if net.scale == 1 else x * net.scale, verbose=0).argmax(axis=1)
            for name, x in data.items()}


def run(small: bool = False, progress: bool = False) -> dict:
    """Run the benchmark; return its results (seconds, MB, agreement) as a dict."""
    badnet, source = _badnet()
    sizes = {name: n // 10 if small else n for name, n in LAB_SIZES.items()}
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        splits = {name: write_random_split(Path(tmp) / f"{name}.h5", n, badnet.num_classes,
                                           name.startswith("bd"), seed)
                  for seed, (name, n) in enumerate(sizes.items())}
        if hasattr(os, "sync"):
            os.sync()  # the files are on disk before the clock starts, as a lab's files are
        start = time.perf_counter()
        fast = sweep(badnet, splits["valid"], test=splits["test"], bd_test=splits["bd_test"],
                     progress=progress)
        fast_seconds = time.perf_counter() - start
        fast_peak = peak_rss_mb()
        data = {name: s.load()[0] for name, s in splits.items()}  # students hold the arrays
    steps = np.unique(np.linspace(1, fast.steps, NAIVE_STEPS).round().astype(int)).tolist()
    times, mismatches, compared = [], 0, 0
    for k in steps:
        start = time.perf_counter()
        naive = _naive_step(badnet, fast.order[:k], data)
        times.append(time.perf_counter() - start)
        for name, pred in naive.items():
            mismatches += int((pred != fast.predictions(name, k)).sum())
            compared += len(pred)
    per_step = float(np.mean(times))
    naive_total = per_step * fast.steps
    return {
        "small": small,
        "model": source,
        "images": sizes,
        "layer_pruned": CONV,
        "steps": fast.steps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "fast_sweep": {"seconds": round(fast_seconds, 2), "exact_masking": fast.exact_masking,
                       "columns": list(fast.table.columns)},
        "naive_loop": {"steps_timed": steps, "seconds_per_step": round(per_step, 2),
                       "seconds_all_steps_estimated": round(naive_total, 1),
                       "what": "copy B, zero the channels pruned so far, model.predict on "
                               "every file (batch size 32, Keras' default)"},
        "speedup": round(naive_total / fast_seconds, 1),
        "peak_memory_mb": {"after_fast_sweep": round(fast_peak, 1),
                           "after_naive_loop": round(peak_rss_mb(), 1),
                           "how": "resource.getrusage(RUSAGE_SELF).ru_maxrss: the process's "
                                  "peak resident set size (TensorFlow included); the fast sweep "
                                  "streams the files, the naive loop holds them in memory"},
        "agreement": mismatches == 0,
        "predictions_compared": compared,
        "mismatches": mismatches,
    }
