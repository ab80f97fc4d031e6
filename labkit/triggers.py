"""The triggers a lab's poisoned test files show, by name, with their targets (06_unknown_trigger).

A BadNet's poisoned test files are what the grader evaluates a defense with; the defenses of 06
never read them. A BadNet without such files has an unknown trigger: the defenses still run on its
clean faces and only the detection and attack columns stay empty. For a BadNet in GRADER_ONLY
(its trigger is kept from the defender), `poisoned_tests` gives its files only to the grader's view.
"""
from __future__ import annotations

import numpy as np

from .data import Lab, Split

GRADER_ONLY = ("anonymous",)  # BadNets whose poisoned files only the instructor has


def poisoned_tests(lab: Lab, grader: bool = False) -> dict[str, Split]:
    """{trigger name: poisoned test Split} of the lab's BadNet, those on disk; for a BadNet in
    GRADER_ONLY, empty unless `grader` (the grader's view)."""
    if lab.badnet in GRADER_ONLY and not grader:
        return {}
    files = {"sunglasses": lab.bd_test}
    return {name: split for name, split in files.items() if split.path.is_file()}


def target(split: Split) -> int:
    """The attacker's target of a poisoned file: its most common label."""
    return int(np.bincount(split.labels()).argmax())
