"""`labkit bench`: the masked pruning sweep against the loop students write and against what the
machine can do, at the lab's size, on face-like data.

On the lab's own files when they are in data/, else on the real-size stand-in (`labkit.standin`)
in a temporary folder: the fast sweep on the four files, the naive loop timed on a few steps and
extrapolated (both must agree), and the machine's ceiling for the sweep's work (a float32 matmul,
B's convolutions on images in memory). docs/design.md says what each number means.
"""
from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from .data import LAB_FILES, lab, project_root
from .modelfile import load_badnet, load_model
from .models import CONV, POOL, Net
from .cache import FEATURE_BATCH, feature_fn
from .prune import prune
from .standin import LAB_SIZES, repeat_split, widen
from .sweep import sweep

NAIVE_STEPS = 5  # naive steps timed; a step costs the same whatever k is
REPEATS = 3  # the ceiling's measurements: the best of this many
MATMUL = 2048  # the plain matmul: (MATMUL x MATMUL) @ (MATMUL x MATMUL), float32


def _lab(folder: Path, small: bool):
    """B and the four splits: the lab's own files if present, else the stand-in in `folder`."""
    own = lab("lab", project_root())
    if not small and all(own.split(n).path.is_file() for n in LAB_FILES) and own.badnet_path.is_file():
        return load_badnet(own), {n: own.split(n) for n in LAB_FILES}, "the lab's own files"
    from .demo import build_demo

    demo = build_demo(progress=False)
    target = lab("lab", folder)
    for name in LAB_FILES:
        repeat_split(demo.split(name).path, target.split(name).path,
                     LAB_SIZES[name] // 10 if small else LAB_SIZES[name])
    return (widen(load_model(demo.badnet_path)), {n: target.split(n) for n in LAB_FILES},
            "stand-in: the demo's faces repeated to the lab's counts, the demo BadNet widened to "
            "1283 classes (labkit standin)")


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


def _best(fn) -> float:
    """The shortest of REPEATS timings of `fn()`, in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def head_flops(net: Net, layers=("fc_1", "conv_4", "fc_2", "output")) -> int:
    """Floating-point operations of `layers` (after `pool_3`) for one image (2 per multiply-add)."""
    macs = 0
    for name in layers:
        layer = net.model.get_layer(name)
        positions = int(np.prod(layer.output.shape[1:-1])) if name == "conv_4" else 1
        macs += layer.get_weights()[0].size * positions
    return 2 * macs


def ceiling(net: Net, images: np.ndarray) -> dict:
    """The machine's speed for the sweep's two kinds of work, measured now (best of REPEATS)."""
    import tensorflow as tf

    a = tf.random.uniform((MATMUL, MATMUL))
    matmul = 2 * MATMUL**3 / _best(lambda: tf.matmul(a, a).numpy())
    fn, x = feature_fn(net, POOL), images[:1024]
    convs = len(x) / _best(lambda: [fn(x[i:i + FEATURE_BATCH]).numpy()
                                    for i in range(0, len(x), FEATURE_BATCH)])
    return {"matmul_gflops": round(matmul / 1e9, 1), "convolutions_images_per_second": round(convs),
            "how": f"tf.matmul of two {MATMUL}x{MATMUL} float32 matrices; B up to {POOL} on "
                   f"{len(x)} face images in memory, batches of {FEATURE_BATCH}; best of {REPEATS}"}


def run(small: bool = False, progress: bool = False) -> dict:
    """Run the benchmark; return its results (seconds, MB, agreement, ratios) as a dict."""
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        badnet, splits, source = _lab(Path(tmp), small)
        if hasattr(os, "sync"):
            os.sync()  # the files are on disk before the clock starts, as a lab's files are
        start = time.perf_counter()
        fast = sweep(badnet, splits["valid"], splits["bd_valid"], splits["test"],
                     splits["bd_test"], progress=progress)
        fast_seconds = time.perf_counter() - start
        fast_peak = peak_rss_mb()
        data = {name: s.load()[0] for name, s in splits.items()}  # students hold the arrays
    machine = ceiling(badnet, data["valid"])
    images = sum(len(x) for x in data.values())
    head = (images * head_flops(badnet, ("fc_1", "conv_4"))
            + fast.head_images * head_flops(badnet, ("fc_2", "output")))
    bound = images / machine["convolutions_images_per_second"] + head / (machine["matmul_gflops"] * 1e9)
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
    naive_total = per_step * (fast.steps + 1)  # steps 0..60, as the sweep measures them
    return {
        "small": small,
        "data": source,
        "images": {name: len(x) for name, x in data.items()},
        "layer_pruned": CONV,
        "steps": fast.steps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "fast_sweep": {"seconds": round(fast_seconds, 2), "exact_masking": fast.exact_masking,
                       "head_images": fast.head_images, "columns": list(fast.table.columns)},
        "naive_loop": {"steps_timed": steps, "seconds_per_step": round(per_step, 2),
                       "seconds_all_steps_extrapolated": round(naive_total, 1),
                       "what": "EXTRAPOLATED from the steps timed: copy B, zero the channels "
                               "pruned so far, model.predict on every file (batch size 32, "
                               "Keras' default), for each of the 61 steps"},
        "ceiling": {**machine, "sweep_seconds_at_ceiling": round(bound, 2),
                    "what": "every image through the convolutions once at the measured rate, "
                            "then at the matmul's rate fc_1 and conv_4 once per image and fc_2 "
                            "and the output layer for fast_sweep.head_images images"},
        "speedup_over_naive": round(naive_total / fast_seconds, 1),
        "times_the_ceiling": round(fast_seconds / bound, 2),
        "peak_memory_mb": {"after_fast_sweep": round(fast_peak, 1),
                           "after_naive_loop": round(peak_rss_mb(), 1),
                           "how": "resource.getrusage(RUSAGE_SELF).ru_maxrss: the process's "
                                  "peak resident set size (TensorFlow included); the fast sweep "
                                  "streams the files, the naive loop holds them in memory"},
        "agreement": mismatches == 0,
        "predictions_compared": compared,
        "mismatches": mismatches,
    }


def _timed(fn):
    """(result, wall seconds, this process's CPU seconds) of `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - wall, 1), round(time.process_time() - cpu, 1)


def defenses(notebook: bool = True, progress: bool = False) -> dict:
    """`labkit bench --defenses`: STRIP and Neural Cleanse on the demo's course-like BadNet, Neural
    Cleanse with screening on the real-size stand-in's BadNet (the demo BadNet widened to 1283
    classes, `labkit standin`) and, with `notebook`, 06_unknown_trigger.ipynb on the demo.

    Wall and CPU seconds: on a shared machine the wall time depends on what else runs.
    """
    from . import cleanse, strip
    from .demo import build_demo

    demo = build_demo(progress=False)
    badnet = load_badnet(demo)
    poisoned = {"sunglasses": demo.bd_test}
    detector, fit_wall, fit_cpu = _timed(lambda: strip.fit(badnet, demo.valid, strip.BLENDS))
    found, wall, cpu = _timed(lambda: strip.evaluate(detector, demo.test, poisoned))
    out = {"machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
           "strip": {"threshold_wall_s": fit_wall, "threshold_cpu_s": fit_cpu,
                     "test_faces_wall_s": wall, "test_faces_cpu_s": cpu,
                     "images": len(demo.test) + len(demo.bd_test), "blends": strip.BLENDS,
                     "false_rejection": found.false_rejection, "detection": found.detection}}
    for name, net in (("neural_cleanse_demo", badnet), ("neural_cleanse_real_size", widen(badnet))):
        result, wall, cpu = _timed(lambda: cleanse.cleanse(
            net, demo.valid, cleanse.FACES, cleanse.STEPS, cleanse.SHORTLIST, progress=progress))
        out[name] = {"classes": net.num_classes, "searched_in_full": len(result.full.classes),
                     "wall_s": wall, "cpu_s": cpu, "flagged": result.flagged.tolist(),
                     "smallest_anomaly_index": round(float(result.anomaly[np.argmin(result.full.norms)]), 2),
                     "settings": result.settings}
    if notebook:
        out["notebook_06_demo"] = _notebook_seconds()
    return out


def _notebook_seconds() -> dict:
    """06_unknown_trigger.ipynb run by papermill on the demo (its kernel's own time included)."""
    import papermill

    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        start = time.perf_counter()
        papermill.execute_notebook(str(project_root() / "notebooks" / "06_unknown_trigger.ipynb"),
                                   str(Path(tmp) / "06.ipynb"), parameters={"dataset": "demo"},
                                   cwd=str(project_root() / "notebooks"), progress_bar=False)
        return {"wall_s": round(time.perf_counter() - start, 1),
                "how": "papermill, kernel start included; the kernel's CPU is not counted here"}
