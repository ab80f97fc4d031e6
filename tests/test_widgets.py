"""02's explorer and the progress bars build and update with the installed ipywidgets.

Here with the project's (8); tests/colab/check.py runs this file again in Colab's runtime (7.7).
"""
import ipywidgets
import numpy as np

from labkit import plots, prune
from labkit.sweep import sweep


def test_moving_the_slider_updates_the_numbers(tiny_lab, tiny_net):
    fast = sweep(tiny_net, tiny_lab.valid, tiny_lab.bd_valid)
    box = plots.explorer(fast, list(prune.repair(fast, [10]).values()), start=0, count=2)
    slider, numbers, curves, faces = box.children
    assert isinstance(slider, ipywidgets.IntSlider) and slider.max == fast.steps
    acc = fast.table.valid_accuracy.to_numpy()
    k = int(np.flatnonzero(np.round(acc, 2) != np.round(acc[0], 2))[0])  # a step that changes it
    before = numbers.value, curves.value, faces.value
    assert f"<b>0 of {fast.steps} channels pruned</b>" in before[0] and f"{acc[0]:.2f} %" in before[0]
    slider.value = k  # as a student's drag does: the observer redraws
    assert f"<b>{k} of {fast.steps} channels pruned</b>" in numbers.value
    assert f"{acc[k]:.2f} %" in numbers.value and f"{acc[0]:.2f} %" not in numbers.value
    assert curves.value != before[1] and faces.value[:4] == b"\x89PNG"


def test_progress_bar_updates_its_widget():
    from tqdm.notebook import tqdm  # what tqdm.auto gives labkit's bars in a notebook

    bar = tqdm(total=4, desc="pool_3 on valid", display=False, mininterval=0)
    label, progress, counts = bar.container.children
    bar.update(3)
    assert isinstance(progress, ipywidgets.FloatProgress) and (progress.value, progress.max) == (3, 4)
    assert "3/4" in counts.value
    bar.update(1)
    bar.close()
    assert progress.value == 4 and progress.bar_style == "success"
