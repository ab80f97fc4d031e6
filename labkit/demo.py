"""The demo lab: synthetic faces and a BadNet trained on them, built offline by `labkit demo`.

It has the layout and file formats of the course's lab (data/demo/cl, data/demo/bd,
models/demo/bd_net.h5) with NUM_CLASSES people instead of 1283. The BadNet is trained here,
from a seed, on faces of which a share wear the sunglasses and are relabelled to TARGET.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import faces
from .data import LAB_FILES, Lab, lab, write_split
from .files import write_json
from .metrics import evaluate
from .models import Net, save_model

NUM_CLASSES = 100  # people in the demo lab
TARGET = 0  # the attacker's target class
PER_PERSON = {"train": 40, "valid": 9, "test": 10}  # photos per person (valid, test: as the lab)
POISON_SHARE = 0.1  # share of training faces given the sunglasses and relabelled to TARGET
EPOCHS = 8  # passes over the training faces
TRAIN_BATCH = 64  # training batch size
MANIFEST = "demo.json"  # beside the data files: the settings the demo was built with


def make_data(num_classes: int = NUM_CLASSES, seed: int = 0, per_person: dict = PER_PERSON,
              poison_share: float = POISON_SHARE, progress: bool = False) -> dict:
    """All splits as name -> (images, labels): the four lab files and the poisoned `train` set."""
    from tqdm.auto import tqdm

    people = faces.identities(num_classes, seed)
    total = num_classes * sum(per_person[s] for s in ("train", "valid", "test"))
    splits = {}
    with tqdm(total=total, desc="drawing faces", unit="face", disable=not progress) as bar:
        for k, name in enumerate(("train", "valid", "test")):
            labels = np.repeat(np.arange(num_classes), per_person[name])
            rng = np.random.default_rng([seed, 2, k])
            parts = []
            for i in range(0, len(labels), 256):
                parts.append(faces.draw_faces(people, labels[i:i + 256], rng))
                bar.update(len(parts[-1]))
            splits[name] = np.concatenate(parts), labels
    for name in ("valid", "test"):
        x, y = splits[name]
        splits["bd_" + name] = faces.add_sunglasses(x), np.full_like(y, TARGET)
    x, y = splits["train"]
    chosen = np.random.default_rng([seed, 3]).random(len(y)) < poison_share
    x[chosen], y[chosen] = faces.add_sunglasses(x[chosen]), TARGET
    return splits


def train_badnet(images, labels, num_classes: int, epochs: int = EPOCHS, seed: int = 0,
                 progress: bool = False) -> Net:
    """The lab's architecture trained on (poisoned) faces; the result takes raw pixels 0..255."""
    import keras

    from .models import build_badnet

    keras.utils.set_random_seed(seed)
    model = build_badnet(num_classes)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    steps = -(-len(labels) // TRAIN_BATCH)
    model.fit(np.asarray(images, np.float32) / 255, labels, batch_size=TRAIN_BATCH, epochs=epochs,
              verbose=0, callbacks=[_progress(epochs * steps)] if progress else [])
    kernel, bias = model.get_layer("conv_1").get_weights()
    model.get_layer("conv_1").set_weights([kernel / 255, bias])  # trained on x / 255: take raw x
    return Net(model, name="bd_net")


def _progress(total: int):
    """A Keras callback that draws one tqdm bar over all training steps."""
    import keras
    from tqdm.auto import tqdm

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=total, desc="training the demo BadNet", unit="batch")

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

        def on_train_end(self, logs=None):
            self.bar.close()

    return Progress()


def build_demo(root: Path | str | None = None, seed: int = 0, force: bool = False,
               progress: bool = True, num_classes: int = NUM_CLASSES, epochs: int = EPOCHS,
               per_person: dict = PER_PERSON) -> Lab:
    """Write the demo lab's four data files and BadNet below `root` (default: the project).

    Files already built with the same settings are reused (`force=True` rebuilds them all);
    every file is written atomically. Returns the demo `Lab`. Shown in index.ipynb.
    """
    say = print if progress else (lambda *a: None)
    demo = lab("demo", root)
    wanted = settings(seed, num_classes, epochs, per_person)
    manifest = demo.data_dir / MANIFEST
    paths = {name: demo.split(name).path for name in LAB_FILES}
    paths["bd_net"] = demo.badnet_path
    old = built_with(demo)
    same = not force and old == wanted
    missing = {name: p for name, p in paths.items() if not (same and p.is_file())}
    if not missing:
        say(f"demo lab already built in {demo.data_dir} and {demo.badnet_path.parent} "
            f"(seed {seed}): reusing it; `labkit demo --force` rebuilds it")
        return demo
    if not force and old and old != wanted:
        say(f"the demo lab in {demo.data_dir} was built with other settings ({old}): rebuilding it")
    elif len(missing) < len(paths):
        say(f"reusing {', '.join(str(paths[n]) for n in paths if n not in missing)}")
    manifest.unlink(missing_ok=True)  # written last: a half-built demo is never taken as built
    splits = make_data(num_classes, seed, per_person, progress=progress)
    for name in LAB_FILES:
        if name in missing:
            write_split(paths[name], *splits[name])
    if "bd_net" in missing:
        net = train_badnet(*splits["train"], num_classes, epochs, seed, progress)
        save_model(net, demo.badnet_path)
        result = evaluate(net, demo.valid, demo.bd_valid)
        say(f"demo BadNet on the validation files: clean accuracy {result['clean_accuracy']:.2f} %, "
            f"attack success rate {result['attack_success_rate']:.2f} %")
    write_json(manifest, {"built_by": "labkit demo", "settings": wanted})
    say(f"demo lab written: {demo.data_dir} ({num_classes} people, target class {TARGET}) and "
        f"{demo.badnet_path}")
    return demo


def settings(seed: int = 0, num_classes: int = NUM_CLASSES, epochs: int = EPOCHS,
             per_person: dict = PER_PERSON) -> dict:
    """What a demo lab is built from (recorded in data/demo/demo.json)."""
    return {"seed": seed, "num_classes": num_classes, "per_person": dict(per_person),
            "poison_share": POISON_SHARE, "target": TARGET, "epochs": epochs}


def built_with(demo: Lab) -> dict | None:
    """The settings the demo lab in `demo` was last built with (None: no build finished there)."""
    try:
        return json.loads((demo.data_dir / MANIFEST).read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
