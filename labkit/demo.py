"""The demo lab: synthetic faces in the course's file formats and three shipped demo BadNets.

`labkit demo` draws the faces (the same seed gives byte-identical files) into data/demo/ and
copies the three BadNets that ship with labkit (`labkit/demo_models/`) into models/demo/, so
every student gets the same models and the same numbers. The BadNets were trained once by
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
from .data import DEMO_BADNETS, LAB_FILES, Lab, lab, write_split
from .errors import LabError
from .files import atomic_path, check_outputs, file_sha256, transaction, write_json
from .metrics import evaluate
from .models import Net, save_model

NUM_CLASSES = 100  # people in the demo lab
PER_PERSON = {"train": 80, "valid": 9, "test": 10}  # photos per person (valid, test: as the lab)
SHIPPED = Path(__file__).parent / "demo_models"  # the three BadNets labkit ships
RECORD = "demo_models.json"  # beside the BadNets: the faces they fit and what they score
MANIFEST = "demo.json"  # beside the data files: the settings the faces were drawn with
RECIPES = {"course": attack.course_like, "baseline": attack.baseline,
           "prune_aware": attack.prune_aware}


def settings(seed: int = 0, num_classes: int = NUM_CLASSES, per_person: dict = PER_PERSON) -> dict:
    """What the demo's faces are drawn from (recorded in data/demo/demo.json)."""
    return {"seed": seed, "num_classes": num_classes, "per_person": dict(per_person),
            "target": attack.TARGET, "trigger": "sunglasses"}


def make_data(names=("valid", "test"), seed: int = 0, num_classes: int = NUM_CLASSES,
              per_person: dict = PER_PERSON, progress: bool = False) -> dict:
    """Clean splits `names` as name -> (images, labels), and the poisoned copies of valid/test."""
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
    for name in {"valid", "test"} & set(names):
        x, y = splits[name]
        splits["bd_" + name] = faces.add_sunglasses(x), np.full_like(y, attack.TARGET)
    return splits


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
    paths = {name: demo.split(name).path for name in LAB_FILES}
    if not force and built_with(demo) == wanted and all(p.is_file() for p in paths.values()):
        say(f"demo faces already drawn in {demo.data_dir} (seed {seed}): reusing them; "
            "`labkit demo --force` draws them again")
    else:
        manifest.unlink(missing_ok=True)  # written last: half-drawn faces are never taken as built
        splits = make_data(("valid", "test"), seed, num_classes, per_person, progress)
        for name, path in paths.items():
            write_split(path, *splits[name])
        write_json(manifest, {"built_by": "labkit demo", "settings": wanted})
        say(f"demo faces written: {demo.data_dir} ({num_classes} people, target class "
            f"{attack.TARGET})")
    if record is not None:
        install_models(Path(models), demo.badnet_path.parent, say)
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
        faces_lab = lab("demo", tmp)
        for name in LAB_FILES:
            write_split(faces_lab.split(name).path, *data[name])
        record["data_sha256"] = {n: file_sha256(faces_lab.split(n).path) for n in LAB_FILES}
        with transaction():  # the BadNets and their record together, or nothing
            for name in which:
                model = RECIPES[name](data["train"], faces.add_sunglasses, num_classes, seed,
                                      progress)
                net = Net(model, name=Path(DEMO_BADNETS[name]).stem)
                save_model(net, out / DEMO_BADNETS[name])
                scores = evaluate(net, faces_lab.test, faces_lab.bd_test)
                record["models"][name] = {"file": DEMO_BADNETS[name], **{
                    k: round(float(scores[k]), 2) for k in ("clean_accuracy", "attack_success_rate")}}
                if progress:
                    print(f"{name}: {record['models'][name]}")
            write_json(out / RECORD, record)
    return out


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
