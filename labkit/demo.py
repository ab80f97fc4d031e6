"""The demo lab: synthetic faces in the course's file formats and five shipped demo BadNets.

`labkit demo` draws the faces (the same seed gives byte-identical files) into data/demo/ and
copies the BadNets that ship with labkit (`labkit/demo_models/`) into models/demo/, so every
student gets the same models and the same numbers. The poisoned faces of the grader's triggers
(`data.GRADER_TRIGGERS`: the `anonymous` BadNet's) are not written there: `labkit demo --reveal
DIR` writes them for an instructor. The BadNets were trained once by
`labkit demo --retrain DIR` with the recipes in `labkit.attack`; `demo_models.json` beside them
records the faces they were trained for and what they score, and a test checks that both agree.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import attack, faces
from .data import (BADNET_TRIGGERS, DEMO_BADNETS, GRADER_TRIGGERS, LAB_FILES, TRIGGERS, Lab, Split,
                   lab, poisoned_file, write_split)
from .errors import LabError
from .files import atomic_path, check_outputs, file_sha256, transaction, write_json
from .models import Net, save_model

NUM_CLASSES = 100  # people in the demo lab
PER_PERSON = {"train": 80, "valid": 9, "test": 10}  # photos per person (valid, test: as the lab)
SHIPPED = Path(__file__).parent / "demo_models"  # the BadNets labkit ships
RECORD = "demo_models.json"  # beside the BadNets: the faces they fit and what they score
MANIFEST = "demo.json"  # beside the data files: the settings the faces were drawn with
RECIPES = {"course": attack.course_like, "baseline": attack.baseline,
           "prune_aware": attack.prune_aware, "anonymous": attack.course_like,
           "multi_trigger": attack.course_like}
STUDENT_TRIGGERS = tuple(t for t in TRIGGERS if t not in GRADER_TRIGGERS)  # in data/demo/bd/


def settings(seed: int = 0, num_classes: int = NUM_CLASSES, per_person: dict = PER_PERSON) -> dict:
    """What the demo's faces are drawn from (recorded in data/demo/demo.json)."""
    return {"seed": seed, "num_classes": num_classes, "per_person": dict(per_person),
            "target": TRIGGERS["sunglasses"], "trigger": "sunglasses", "triggers": dict(TRIGGERS)}


def make_data(names=("valid", "test"), seed: int = 0, num_classes: int = NUM_CLASSES,
              per_person: dict = PER_PERSON, progress: bool = False) -> dict:
    """Clean splits `names` as name -> (images, labels)."""
    from tqdm.auto import tqdm

    people = faces.identities(num_classes, seed)
    splits = {}
    with tqdm(total=num_classes * sum(per_person[s] for s in names), desc="drawing faces",
              unit="face", disable=not progress) as bar:
        for name in names:
            labels = np.repeat(np.arange(num_classes), per_person[name])
            rng = np.random.default_rng([seed, 2, ("train", "valid", "test").index(name)])
            parts = []
            for i in range(0, len(labels), 256):
                parts.append(faces.draw_faces(people, labels[i:i + 256], rng))
                bar.update(len(parts[-1]))
            splits[name] = np.concatenate(parts), labels
    return splits


def data_files(triggers=STUDENT_TRIGGERS) -> dict:
    """Each data file's path below a data folder -> (clean part, trigger or None): the clean
    validation and test files and, for each of `triggers`, their poisoned copies."""
    files = {LAB_FILES[part][0]: (part, None) for part in ("valid", "test")}
    files.update({poisoned_file(t, part): (part, t) for t in triggers for part in ("valid", "test")})
    return files


def write_data(folder: Path, splits: dict, files: dict) -> dict:
    """Write `files` (see `data_files`) from the clean `splits` below `folder`; {rel: path}."""
    paths = {}
    for rel, (part, trigger) in files.items():
        x, y = splits[part]
        if trigger is not None:
            x, y = faces.wear(x, trigger), np.full_like(y, TRIGGERS[trigger])
        paths[rel] = write_split(folder / rel, x, y)
    return paths


def build_demo(root: Path | str | None = None, seed: int = 0, force: bool = False,
               progress: bool = True, num_classes: int = NUM_CLASSES,
               per_person: dict = PER_PERSON, models: Path | str | None = SHIPPED) -> Lab:
    """Write the demo's four data files and its BadNets below `root` (default: the project).

    Faces already drawn with the same settings are reused (`force=True` draws them again).
    The BadNets come from `models` (default: the shipped ones), which must have been trained
    for these settings; `models=None` writes the faces only. Returns the demo `Lab`.
    """
    say = print if progress else (lambda *a: None)
    demo = lab("demo", root)
    wanted = settings(seed, num_classes, per_person)
    record = read_record(models) if models is not None else None
    if record is not None and record["settings"] != wanted:
        raise LabError(f"{Path(models) / RECORD}: these BadNets were trained for other faces "
                       f"({record['settings']}); train BadNets for seed {seed} with "
                       f"`labkit demo --retrain DIR --seed {seed}` and pass --models DIR")
    manifest = demo.data_dir / MANIFEST
    paths = [demo.data_dir / rel for rel in data_files()]
    models_dir = demo.badnet_path.parent
    check_outputs([manifest, *paths, *(models_dir / f for f in DEMO_BADNETS.values())],
                  within=demo.root)  # before any face is drawn
    if not force and built_with(demo) == wanted and all(p.is_file() for p in paths):
        say(f"demo faces already drawn in {demo.data_dir} (seed {seed}): reusing them; "
            "`labkit demo --force` draws them again")
    else:
        manifest.unlink(missing_ok=True)  # written last: half-drawn faces are never taken as built
        splits = make_data(("valid", "test"), seed, num_classes, per_person, progress)
        write_data(demo.data_dir, splits, data_files())
        write_json(manifest, {"built_by": "labkit demo", "settings": wanted})
        say(f"demo faces written: {demo.data_dir} ({num_classes} people; triggers and targets "
            + ", ".join(f"{t} {TRIGGERS[t]}" for t in STUDENT_TRIGGERS) + ")")
    if record is not None:
        install_models(Path(models), models_dir, say)
    return demo


def install_models(source: Path, folder: Path, say=print) -> None:
    """Copy the BadNets in `source` into `folder` (models/demo/), replacing stale copies."""
    for name, file in DEMO_BADNETS.items():
        src, dst = source / file, folder / file
        if not src.is_file():
            raise LabError(f"{src}: the {name} demo BadNet is missing; reinstall labkit or "
                           "train it with `labkit demo --retrain DIR`")
        if dst.is_file() and dst.read_bytes() == src.read_bytes():
            continue
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        say(f"demo BadNet {name!r}: {dst}")


def read_record(folder: Path | str) -> dict:
    """The record beside a folder of demo BadNets: the faces' settings and each model's scores."""
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LabError(f"{path}: cannot read the demo BadNets' record ({err}); "
                       "reinstall labkit or retrain with `labkit demo --retrain DIR`") from None


def built_with(demo: Lab) -> dict | None:
    """The settings the demo faces in `demo` were last drawn with (None: no build finished there)."""
    try:
        return json.loads((demo.data_dir / MANIFEST).read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def retrain(out: Path | str, seed: int = 0, force: bool = False, progress: bool = True,
            num_classes: int = NUM_CLASSES, per_person: dict = PER_PERSON,
            which=tuple(DEMO_BADNETS)) -> Path:
    """Train the demo's BadNets (`which`) on the demo's faces and write them and their record to `out`.

    Never writes into the shipped folder; existing files in `out` need `force=True`.
    """
    out = Path(out)
    if out.resolve() == SHIPPED.resolve():
        raise LabError(f"{out}: that is the BadNets labkit ships; choose another folder")
    targets = [out / DEMO_BADNETS[name] for name in which] + [out / RECORD]
    check_outputs(targets, force=force)  # before minutes of training, not after
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # the same seed trains the same weights
    data = make_data(("train", "valid", "test"), seed, num_classes, per_person, progress)
    record = {"trained_by": "labkit demo --retrain", "recipe": recipe(),
              "settings": settings(seed, num_classes, per_person), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_data(Path(tmp), data, data_files(tuple(TRIGGERS)))
        record["data_sha256"] = {rel: file_sha256(p) for rel, p in paths.items()}
        with transaction():  # the BadNets and their record together, or nothing
            for name in which:
                triggers = {t: TRIGGERS[t] for t in BADNET_TRIGGERS.get(name, ("sunglasses",))}
                model = RECIPES[name](data["train"], triggers, num_classes, seed, progress)
                net = Net(model, name=Path(DEMO_BADNETS[name]).stem)
                save_model(net, out / DEMO_BADNETS[name])
                poisoned = {t: Split(Path(tmp) / poisoned_file(t, "test"), "test", True) for t in triggers}
                record["models"][name] = {"file": DEMO_BADNETS[name], **scores(
                    net, Split(Path(tmp) / LAB_FILES["test"][0], "test"), poisoned)}
                if progress:
                    print(f"{name}: {record['models'][name]}")
            write_json(out / RECORD, record)
    return out


def scores(net: Net, test: Split, poisoned: dict) -> dict:
    """What a demo BadNet's record holds: its clean accuracy on `test` and its attack success
    rate on each trigger's poisoned test file, `poisoned` = {trigger: Split} (%, rounded)."""
    from .metrics import attack_success_rates, clean_accuracy

    return {"clean_accuracy": round(clean_accuracy(net, test), 2),
            "attack_success_rate": {t: round(v, 2) for t, v in attack_success_rates(net, poisoned).items()}}


def reveal(out: Path | str, seed: int = 0, force: bool = False, root: Path | str | None = None,
           num_classes: int = NUM_CLASSES, per_person: dict = PER_PERSON) -> list[Path]:
    """Write the grader's poisoned faces (GRADER_TRIGGERS: the `anonymous` BadNet's trigger) below
    `out`, for an instructor's `labkit eval`; never where the demo lab looks (data/demo/)."""
    out = Path(out)
    files = {rel: v for rel, v in data_files(GRADER_TRIGGERS).items() if v[1] is not None}
    demo_data = lab("demo", root).data_dir.resolve()
    if out.resolve() == demo_data or demo_data in out.resolve().parents:
        raise LabError(f"{out}: that is inside the demo lab's data folder, where the student's "
                       "notebooks look; reveal the grader's faces in a folder of their own")
    paths = check_outputs([out / rel for rel in files], force=force)
    splits = make_data(("valid", "test"), seed, num_classes, per_person)
    with transaction():
        write_data(out, splits, files)
    return paths


def recipe() -> dict:
    """The training settings of `labkit.attack`, recorded beside the BadNets they made."""
    return {k: getattr(attack, k) for k in dir(attack) if k.isupper() and k != "TARGET"}


SCRATCH_STEPS = 210  # training steps (of attack.BATCH faces) from scratch, at any size of data


def from_scratch(valid, num_classes: int, seed: int = 0, progress: bool = False) -> Net:
    """The defender's alternative to repairing B: the lab's network trained from scratch on
    the clean validation split alone (9 faces per person), with a standard start (bias 0).
    A reference, not a race: about SCRATCH_STEPS steps (whole passes, at least one)."""
    x, y = valid.load()
    model = attack.new_network(num_classes, seed, conv3_bias=0.0)
    epochs = max(1, round(SCRATCH_STEPS / -(-len(y) // attack.BATCH)))
    attack.fit(model, x, y, epochs=epochs, progress=progress and "training from scratch")
    return Net(attack.fold_inputs(model), name="from_scratch")
