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


def evaluate(net, clean: Split, poisoned, progress: bool = False, cache=None) -> dict:
    """Clean accuracy and attack success rate of `net`, as the course's eval script reports them
    (`cache`: see `predict`). `poisoned` is a Split, or {trigger: Split} (`lab.poisoned("test")`):
    one attack column per trigger where there are several (`attack_columns`), none for {}."""
    files = attack_columns(poisoned if isinstance(poisoned, dict) else {"": poisoned})
    result = {
        "model": str(getattr(net, "path", None) or net.name),
        "clean_data": str(clean.path),
        **{c.replace("attack_success_rate", "poisoned_data"): str(s.path) for c, s in files.items()},
        "clean_accuracy": clean_accuracy(net, clean, progress, cache),
        **{c: attack_success_rate(net, s, progress, cache) for c, s in files.items()},
        "input_scale": getattr(net, "scale", None),
    }
    warning = scaling_warning(net, result["clean_accuracy"])
    if warning:
        result["warning"] = warning
    return result


def trigger_column(column: str, trigger: str) -> str:
    """A table's column for one trigger of several, e.g. "test_attack_success_rate:eyebrows"."""
    return f"{column}:{trigger}"


def attack_columns(poisoned: dict, column: str = "attack_success_rate") -> dict:
    """{column name: Split} for the poisoned files {trigger: Split}: `column` alone for one
    trigger, one `trigger_column` each for several; {} where the trigger is unknown."""
    if len(poisoned) == 1:
        return {column: next(iter(poisoned.values()))}
    return {trigger_column(column, t): split for t, split in poisoned.items()}


def attack_success_rates(net, poisoned: dict, progress: bool = False, cache=None) -> dict:
    """{trigger: attack success rate (%)} of `net` on each of the poisoned files {trigger: Split}."""
    return {t: attack_success_rate(net, s, progress, cache) for t, s in poisoned.items()}


def by_trigger(columns, column: str) -> dict:
    """{trigger: column name} of the measured `column` among `columns` (a table's, a row's or a
    dict's keys): {"": column} where one trigger was measured, one entry per trigger where
    several were, {} where none was (the trigger unknown)."""
    found = {c.partition(":")[2]: c for c in columns if c.partition(":")[0] == column and ":" in c}
    return found or ({"": column} if column in columns else {})


def scaling_warning(net, clean_acc: float) -> str | None:
    """A hint when clean accuracy is so low that the model probably expects other pixel scaling."""
    if clean_acc >= NEAR_CHANCE or not hasattr(net, "scale"):
        return None
    other = "pixels / 255 (--scale 1/255)" if net.scale == 1 else "raw pixels 0..255 (--scale 1)"
    return (f"clean accuracy {clean_acc:.2f} % is near chance: {net.name} probably expects "
            f"other input scaling; it got {'raw pixels' if net.scale == 1 else 'pixels / 255'} "
            f"({net.scale_source}); try {other}")


def report_lines(result: dict) -> list[str]:
    """The lines the course's evaluation script prints (raw floats, as it prints them): its
    attack line once per trigger, none where the trigger is unknown."""
    return [f"Clean Classification accuracy: {result['clean_accuracy']}"] + [
        f"Attack Success Rate{f' ({t})' if t else ''}: {result[c]}"
        for t, c in by_trigger(result, "attack_success_rate").items()]


def table_lines(result: dict) -> list[str]:
    """labkit's rounded summary of one model's clean accuracy and attack success rate."""
    return [f"{result['model']}:", f"  clean accuracy       {result['clean_accuracy']:6.2f} %"] + [
        f"  attack success rate  {result[c]:6.2f} %{f' ({t})' if t else ''}"
        for t, c in by_trigger(result, "attack_success_rate").items()]
