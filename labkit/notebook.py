"""What every notebook does right after its parameters: check them, find or build the lab.

A notebook's `parameters` cell holds literals only (papermill replaces them); the next cell calls
`start(...)`, which stops with a one-line LabError on a bad value. 02 records which B' it saved
(`record_run`) so that 03 uses those and no stale file of an earlier run (`last_run`).
Used by every notebook.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import data
from .errors import LabError
from .files import hold_project, write_json
from .prune import ORDERS, check_drop

# where Colab users keep the course's files; LABKIT_DRIVE replaces it only for the Colab check's fake Drive
DRIVE_FOLDER = Path(os.environ.get("LABKIT_DRIVE", "/content/drive/MyDrive/labkit"))
COURSE_FILES = ("data/cl/valid.h5", "data/cl/test.h5", "data/bd/bd_valid.h5",
                "data/bd/bd_test.h5", "models/bd_net.h5")
RUN_RECORD = "02_run.json"  # in the lab's repaired folder: what the last run of 02 saved


def in_colab() -> bool:
    return "google.colab" in sys.modules


def start(dataset: str, drop: float | None = None, badnet: str = "course",
          order: str | None = None) -> data.Lab:
    """Check the parameters and return the lab; the demo lab is built here if it is missing.

    The kernel holds the project's shared lock from here until it stops (`files.hold_project`):
    notebooks and commands may run together, `labkit run-all` waits for none of them and is
    refused while a kernel holds it (and a notebook is refused while run-all runs).
    """
    lab = data.lab(dataset, badnet=badnet)
    if drop is not None:
        check_drop(drop)
    if order is not None and order not in ORDERS:
        raise LabError(f"order={order!r}: use 'increasing' (the method), 'decreasing' or 'random'")
    hold_project(lab.root, f"a notebook's kernel (dataset={dataset!r})")
    if in_colab() and dataset == "lab":
        link_drive(lab)
    elif in_colab():
        print("To use the course's files from your Google Drive, put them in MyDrive/labkit/data/cl, "
              "MyDrive/labkit/data/bd and MyDrive/labkit/models/bd_net.h5, and set dataset = 'lab'.")
    if dataset == "lab":
        check_course_files(lab)
    if dataset == "demo":
        from .demo import build_demo

        build_demo(root=lab.root)
    lab.report_dir.mkdir(parents=True, exist_ok=True)
    print(f"dataset={dataset!r}, badnet={badnet!r}: data in {lab.data_dir}, BadNet {lab.badnet_path}")
    return lab


WITHOUT_TRIGGER = (
    "**Without the trigger.** The defender of this BadNet has clean faces only. What can be measured: "
    "the mean activations on clean faces, the pruning steps and thresholds, the clean accuracy of "
    "B, B' and G, how many clean faces G flags, and fine-tuning's effect on clean accuracy. What "
    "cannot: the attack success rate of B, B' or G, and whether G catches poisoned faces. Only "
    "the grader, who holds the poisoned faces, can measure those (`labkit eval`).")


def needs_trigger(lab: data.Lab) -> bool:
    """For a cell that needs poisoned faces: True if the lab has them, else says so in one line."""
    if not lab.trigger_known:
        print(f"The trigger of BadNet {lab.badnet!r} is unknown to the defender: no poisoned "
              "faces, so this cell is skipped.")
    return lab.trigger_known


def record_run(lab: data.Lab, **info) -> Path:
    """Write what this run of 02 saved (its thresholds `drops`, its `order`) for 03 to read."""
    return write_json(lab.repaired_dir / RUN_RECORD, info)


def last_run(lab: data.Lab) -> dict:
    """What the last run of 02 saved for this lab and BadNet (see `record_run`)."""
    path = lab.repaired_dir / RUN_RECORD
    if not path.is_file():
        raise LabError(f"{path}: not found; run 02_prune.ipynb for this dataset and badnet first")
    return json.loads(path.read_text())


def check_course_files(lab: data.Lab) -> None:
    """Stop with one line naming every course file that is missing and the folder it goes in."""
    needed = [lab.valid.path, lab.test.path, *(s.path for part in ("valid", "test")
                                               for s in lab.poisoned(part).values()), lab.badnet_path]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise LabError(f"{', '.join(str(p) for p in missing)}: {len(missing)} of the course's "
                       f"{len(needed)} files missing; download them from the course's shared "
                       "drive folder (see docs/course-data.md) and put "
                       + ", ".join(f"{p.name} in {p.parent}/" for p in missing))


def link_drive(lab: data.Lab, folder: Path = DRIVE_FOLDER) -> None:
    """In Colab: mount Google Drive and use the course's files kept in MyDrive/labkit/.

    Put data/cl/*.h5, data/bd/*.h5 and models/bd_net.h5 there, as in the repository.
    """
    from google.colab import drive  # only exists in Colab

    drive.mount("/content/drive")
    for rel in COURSE_FILES:
        source, target = folder / rel, lab.root / rel
        if source.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
            print(f"using {source}")
        elif not target.exists():
            print(f"not found: {source} (put the course's {Path(rel).name} there)")
