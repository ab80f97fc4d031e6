"""GoodNet G: the BadNet B and a repaired B' together; where they disagree, G flags a backdoor.

For an input, G outputs the class B and B' both predict, or class N (= B's number of classes,
1283 in the lab: one past the last person) when they differ. Saved, G is one standard Keras
model (`G.keras`): raw pixels in, N+1 outputs whose argmax is G's class, built from Keras layers
and ops only, so the course's grader opens it with `keras.models.load_model` and no labkit.
Shown in 03_goodnet.ipynb.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from .data import BATCH, IMAGE_SHAPE
from .errors import LabError, one_line
from .files import atomic_path, check_input
from .modelfile import baked_scale, check_config, check_zip
from .models import LAB_LAYERS, RAW, Net, lab_model
from .portable import save_portable

MAX_CONFIG_BYTES = 1 << 20  # a GoodNet's config.json is about 30 kB
PARTS = ("badnet", "repaired")  # the names of B and B' inside the saved G
# what G's own graph may hold besides B and B' (checked before Keras reads the file)
GRAPH = {"InputLayer", "Argmax", "Equal", "Cast", "ExpandDims", "Multiply", "Subtract",
         "Concatenate"}


def architecture(net: Net) -> list:
    """Each layer's type and weight shapes: two networks match when these are equal."""
    return [(type(layer).__name__, [tuple(w.shape) for w in layer.weights])
            for layer in net.model.layers if layer.weights]


def rule(badnet_classes, repaired_classes, backdoor_class: int) -> np.ndarray:
    """GoodNet's decision: B's class where B and B' predict the same class, else N (`backdoor_class`).

    Works on any shape (one image, a file, every step of a sweep); the one place the rule lives.
    """
    b = np.asarray(badnet_classes)
    return np.where(b == np.asarray(repaired_classes), b, backdoor_class)


class GoodNet:
    """G(B, B'): `predict(images)` gives B's class where B and B' agree, else N (backdoored).

    `num_classes` is N, B's number of real classes, so `labkit.metrics` checks labels as for B.
    """

    def __init__(self, badnet: Net, repaired, name: str = "goodnet"):
        repaired = getattr(repaired, "net", repaired)  # a `prune.Repaired` or a Net
        if repaired.num_classes != badnet.num_classes:
            raise LabError(f"B' ({repaired.name}) has {repaired.num_classes} classes but B "
                           f"({badnet.name}) has {badnet.num_classes}; B' must be B pruned")
        if architecture(repaired) != architecture(badnet):
            raise LabError(f"B' ({repaired.name}) does not have B's ({badnet.name}) architecture; "
                           "B' must be B with conv_3 channels zeroed")
        self.badnet, self.repaired, self.name, self.path = badnet, repaired, name, None

    @property
    def num_classes(self) -> int:
        return self.badnet.num_classes

    @property
    def backdoor_class(self) -> int:
        """N: the class G outputs for an input it flags as backdoored."""
        return self.badnet.num_classes

    def predict(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """Class of each raw 0..255 image: B's class where B and B' agree, else N."""
        return rule(self.badnet.predict(images, batch_size), self.repaired.predict(images, batch_size),
                    self.backdoor_class)


def keras_goodnet(goodnet: GoodNet):
    """G as one Keras model: raw pixels in; B's probabilities and 0 where B and B' agree, else
    only a 1 at class N, so that its argmax is `rule` (tested against it image by image)."""
    import keras
    from keras import layers, ops

    x = keras.Input(IMAGE_SHAPE, name="input")
    b, r = (lab_model(getattr(goodnet, part).model, getattr(goodnet, part).scale, part)(x)
            for part in PARTS)
    agree = ops.expand_dims(ops.cast(ops.equal(ops.argmax(b, -1), ops.argmax(r, -1)), b.dtype), -1)
    out = layers.Concatenate(name="goodnet")([b * agree, 1 - agree])
    return keras.Model(x, out, name=goodnet.name)


def save_goodnet(goodnet: GoodNet, path: Path | str, protect: tuple = ()) -> Path:
    """Save G as one standard Keras model file `G.keras` (see `keras_goodnet`), atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        raise LabError(f"{path}: save a GoodNet as .keras (one Keras model the course's grader opens)")
    with atomic_path(path, protect) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_portable(keras_goodnet(goodnet), tmp)
    return path


def is_goodnet(path: Path | str) -> bool:
    """Whether `path` is a `.keras` file holding a GoodNet saved by `save_goodnet`.

    Anything else (a FIFO, a folder, a malformed file) is not: `load_model` then says what it is.
    """
    if not Path(path).is_file():  # never open what is not a regular file (a FIFO would block)
        return False
    layers = _config(path).get("layers")
    names = {layer.get("config", {}).get("name") for layer in layers
             if isinstance(layer, dict) and isinstance(layer.get("config"), dict)} \
        if isinstance(layers, list) else set()
    return set(PARTS) <= names


def _config(path: Path | str) -> dict:
    """The model config inside a .keras archive, or {} for anything unreadable or malformed."""
    try:
        with zipfile.ZipFile(path) as z:
            if z.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                return {}
            config = json.loads(z.read("config.json")).get("config", {})
    except (OSError, KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return {}
    return config if isinstance(config, dict) else {}


def load_goodnet(path: Path | str, trust: bool = False) -> GoodNet:
    """Load a GoodNet saved by `save_goodnet`: B and B' come out as `load_model` gives them."""
    import keras

    path = check_input(path, "GoodNet file", "save one with save_goodnet")
    with zipfile.ZipFile(path) if zipfile.is_zipfile(path) else nullcontext() as z:
        if z is not None:
            check_zip(path, z)  # bounded before anything is inflated
    if not is_goodnet(path):
        raise LabError(f"{path}: not a GoodNet file (a .keras model holding 'badnet' and "
                       "'repaired', written by save_goodnet); load single models with load_model")
    layers = _config(path)["layers"]
    odd = [f"{layer['config'].get('name')} ({layer['class_name']})" for layer in layers
           if layer["class_name"] not in GRAPH and layer["config"].get("name") not in PARTS]
    if odd and not trust:
        raise LabError(f"{path}: refused: it holds more than a GoodNet ({', '.join(odd)}); load "
                       "it with trust=True (--trust) only if you trust where it came from")
    for layer in layers:
        if layer["config"].get("name") in PARTS:
            check_config(path, layer, trust)  # B and B': the lab's plain network, nothing else
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except Exception as err:  # Keras reports broken files in many ways
        raise LabError(f"{path}: Keras could not load this GoodNet ({one_line(err)})") from None
    nets = {}
    for part in PARTS:
        sub = model.get_layer(part)
        missing = [n for n in LAB_LAYERS if n not in [layer.name for layer in sub.layers]]
        if missing:
            raise LabError(f"{path}: {part} is not the lab's network: it lacks {', '.join(missing)}")
        nets[part] = Net(lab_model(sub), baked_scale(path, sub) or RAW, "saved with the model",
                         part)
    goodnet = GoodNet(nets["badnet"], nets["repaired"], name=model.name)
    if not trust and _graph(model) != _graph(keras_goodnet(goodnet)):  # labkit evaluates the rule
        raise LabError(f"{path}: its graph is not GoodNet's rule as labkit writes it; save G again "
                       "with save_goodnet (or `labkit goodnet B B' --save G.keras`)")
    goodnet.path = path
    return goodnet


def _graph(model) -> str:
    """G's own graph, its generated names replaced by positions: equal graphs compute the same."""
    layers = model.get_config()["layers"]
    text = json.dumps([[layer["class_name"], layer["inbound_nodes"],
                        {} if layer["name"] in PARTS else
                        {k: v for k, v in layer["config"].items() if k != "name"}]
                       for layer in layers])
    for i, layer in enumerate(layers):
        text = text.replace(f'"keras_history": ["{layer["name"]}"', f'"keras_history": [{i}')
    return text
