"""Clean accuracy and attack success rate, in percentage points, computed in one pass per file.

Attack success rate is the accuracy on a poisoned file, whose labels are the attacker's target.
Shown in 01_evaluate.ipynb.
"""
from __future__ import annotations

import numpy as np

from .cache import predict as stored
from .cache import run
from .data import BATCH, Split

NEAR_CHANCE = 10.0  # clean accuracy (percentage points) below which the scaling is suspect


def predict(net, split: Split, batch_size: int = BATCH, progress: bool = False, cache=None):
    """Predicted classes and true labels of every image of `split`, read batch by batch.

    `net` is anything with `predict(images)` and `num_classes` (a Net, a GoodNet). With `cache`
    (e.g. `lab.cache_dir`), what the run has stored there is used (`labkit.cache.predict`).
    """
    if cache is not None:
        return stored(net, split, cache, progress=progress)
    return run(net, split, batch_size, progress)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of predictions equal to the labels, in percentage points."""
    return 100.0 * float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def clean_accuracy(net, split: Split, progress: bool = False, cache=None) -> float:
    """Accuracy on a clean file, percentage points."""
    return accuracy(*predict(net, split, progress=progress, cache=cache))


def attack_success_rate(net, split: Split, progress: bool = False, cache=None) -> float:
    """Share of poisoned images classified as the attacker's target, percentage points."""
    return accuracy(*predict(net, split, progress=progress, cache=cache))


def evaluate(net, clean: Split, poisoned: Split, progress: bool = False, cache=None) -> dict:
    """Clean accuracy and attack success rate of `net`, as the course's eval script reports them
    (`cache`: see `predict`)."""
    result = {
        "model": str(getattr(net, "path", None) or net.name),
        "clean_data": str(clean.path),
        "poisoned_data": str(poisoned.path),
        "clean_accuracy": clean_accuracy(net, clean, progress, cache),
        "attack_success_rate": attack_success_rate(net, poisoned, progress, cache),
        "input_scale": getattr(net, "scale", None),
    }
    warning = scaling_warning(net, result["clean_accuracy"])
    if warning:
        result["warning"] = warning
    return result


def scaling_warning(net, clean_acc: float) -> str | None:
    """A hint when clean accuracy is so low that the model probably expects other pixel scaling."""
    if clean_acc >= NEAR_CHANCE or not hasattr(net, "scale"):
        return None
    other = "pixels / 255 (--scale 1/255)" if net.scale == 1 else "raw pixels 0..255 (--scale 1)"
    return (f"clean accuracy {clean_acc:.2f} % is near chance: {net.name} probably expects "
            f"other input scaling; it got {'raw pixels' if net.scale == 1 else 'pixels / 255'} "
            f"({net.scale_source}); try {other}")


def report_lines(result: dict) -> list[str]:
    """The two lines the course's evaluation script prints (raw floats, as it prints them)."""
    return [f"Clean Classification accuracy: {result['clean_accuracy']}",
            f"Attack Success Rate: {result['attack_success_rate']}"]


def table_lines(result: dict) -> list[str]:
    """labkit's rounded summary of one model's clean accuracy and attack success rate."""
    return [f"{result['model']}:",
            f"  clean accuracy       {result['clean_accuracy']:6.2f} %",
            f"  attack success rate  {result['attack_success_rate']:6.2f} %"]
