"""The lab's network (DeepID style): build it, load it from any file a student meets, save it.

Every model comes wrapped in a `Net` that knows its input preprocessing (`scale`: the lab's
BadNet takes raw pixels 0..255, the CSAW-HackML-2020 BadNets take pixels / 255), so callers
always pass raw 0..255 images. Loading never runs code from the file: a model with layers
outside the lab's architecture (a Lambda, a custom class) is refused unless `trust=True`.
Shown in 01_evaluate.ipynb.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .data import BATCH, IMAGE_SHAPE, Lab
from .errors import LabError, one_line
from .files import atomic_path

# The lab's layers, in order; the pruning defense works on conv_3 and pool_3.
LAB_LAYERS = ("conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3",
              "conv_4", "fc_1", "fc_2", "output")
WEIGHTED_LAYERS = ("conv_1", "conv_2", "conv_3", "conv_4", "fc_1", "fc_2", "output")
SAFE_LAYERS = {"InputLayer", "Rescaling", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Add",
               "Activation"}
SAFE_ACTIVATIONS = {None, "relu", "softmax", "linear"}
MODEL_CLASSES = {"Functional", "Model", "Sequential"}

RAW, UNIT = 1.0, 1 / 255  # input scales: pixels 0..255 as they are, or divided by 255
SCALE_ATTR = "labkit_input_scale"  # where earlier labkit versions recorded the scale
# Real BadNets recognised by a fingerprint of their conv_1 kernel (unchanged by pruning).
KNOWN_BADNETS = {
    "aaba6ebb957150c7": ("the lab's BadNet (lab3)", RAW),
    "f1e88f5e429aa20b": ("CSAW-HackML-2020 sunglasses BadNet", UNIT),
    "fa71e0dd9b08a3fd": ("CSAW-HackML-2020 anonymous_1 BadNet", UNIT),
    "be0e947de8324758": ("CSAW-HackML-2020 anonymous_2 BadNet", UNIT),
    "bc98ac95bc310265": ("CSAW-HackML-2020 multi-trigger multi-target BadNet", UNIT),
}


def build_badnet(num_classes: int = 1283, name: str = "badnet", scale: float = RAW):
    """The lab's architecture with its layer names; `num_classes` = people in the data.

    A `scale` other than 1 puts a Rescaling layer in front: the network then takes raw pixels.
    """
    import keras
    from keras import layers

    x = inp = keras.Input(IMAGE_SHAPE, name="input")
    if scale != RAW:
        x = layers.Rescaling(scale, name="rescaling")(x)
    x = layers.Conv2D(20, 4, activation="relu", name="conv_1")(x)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(40, 3, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Conv2D(60, 3, activation="relu", name="conv_3")(x)
    pool_3 = layers.MaxPooling2D(2, name="pool_3")(x)
    fc_1 = layers.Dense(160, name="fc_1")(layers.Flatten(name="flatten_1")(pool_3))
    conv_4 = layers.Conv2D(80, 2, activation="relu", name="conv_4")(pool_3)
    fc_2 = layers.Dense(160, name="fc_2")(layers.Flatten(name="flatten_2")(conv_4))
    x = layers.Activation("relu", name="activation_1")(layers.Add(name="add_1")([fc_1, fc_2]))
    out = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inp, out, name=name)


def lab_model(model, scale: float = RAW, name: str | None = None):
    """The lab's architecture holding `model`'s weights, with a Rescaling layer in front unless
    `scale` is 1: what labkit saves, so any grader feeding raw pixels gets labkit's numbers."""
    out = build_badnet(int(model.output_shape[-1]), name or model.name, scale)
    for lname in WEIGHTED_LAYERS:
        out.get_layer(lname).set_weights(model.get_layer(lname).get_weights())
    return out


def _baked_scale(path: Path, model) -> float | None:
    """The factor of the model's Rescaling layer (the input scale saved in it), None without one."""
    layer = next((lay for lay in model.layers if type(lay).__name__ == "Rescaling"), None)
    if layer is None:
        return None
    if np.any(np.asarray(layer.offset) != 0) or np.size(layer.scale) != 1:
        raise LabError(f"{path}: its Rescaling layer is not a plain pixel scale "
                       f"(scale {layer.scale}, offset {layer.offset}); labkit cannot use it")
    return float(np.asarray(layer.scale))


@dataclass
class Net:
    """A Keras model with its input preprocessing; `predict` takes raw 0..255 images."""

    model: object  # keras.Model
    scale: float = RAW  # pixels are multiplied by this before the network sees them
    scale_source: str = "given"  # why this scale: given, saved with the model, known model, default
    name: str = "badnet"
    path: Path | None = None
    _classes_fn: object = field(default=None, init=False, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model)

    def predict(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """Predicted class of each raw 0..255 image (N, 55, 47, 3), as int64."""
        if self._classes_fn is None:
            import tensorflow as tf

            spec = tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32)
            self._classes_fn = tf.function(
                lambda x: tf.argmax(self.model(x * self.scale, training=False), axis=-1),
                input_signature=[spec])
        images = np.asarray(images, np.float32)
        parts = [self._classes_fn(images[i:i + batch_size]).numpy()
                 for i in range(0, len(images), batch_size)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def fingerprint(model) -> str:
    """Short hash of conv_1's kernel: names a network family (pruning leaves conv_1 alone)."""
    kernel = np.asarray(model.get_layer("conv_1").get_weights()[0], np.float32)
    return hashlib.sha256(kernel.tobytes()).hexdigest()[:16]


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes (recorded beside repaired models)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_badnet(lab: Lab, scale: float | None = None, trust: bool = False) -> Net:
    """The lab's BadNet B (`models/demo/bd_net.h5` or `models/bd_net.h5`)."""
    hint = lab.hint.format(folder=lab.badnet_path.parent).replace("download it", "download bd_net.h5")
    return load_model(lab.badnet_path, scale=scale, trust=trust, hint=hint)


def load_model(path: Path | str, scale: float | None = None, trust: bool = False,
               hint: str = "check the path") -> Net:
    """Load a BadNet from a Keras 2 full HDF5 model, a weights-only HDF5 file or a `.keras` file.

    The input scale comes from `scale` if given, else from the file (labkit records it), else
    from the list of known real BadNets, else it is raw pixels (the lab's convention).
    Files with layers outside the lab's architecture are refused unless `trust=True`.
    """
    path = Path(path)
    if not path.is_file():
        raise LabError(f"{path}: model file not found; {hint}")
    if path.stat().st_size == 0:
        raise LabError(f"{path}: the model file is empty (0 bytes); download or build it again")
    saved_scale = None
    if h5py.is_hdf5(path):
        model, saved_scale = _load_h5(path, trust)
    elif zipfile.is_zipfile(path):
        model, saved_scale = _load_keras(path, trust)
    else:
        raise LabError(f"{path}: not a model file (neither HDF5 nor a Keras .keras archive); "
                       "download or save it again")
    names = [layer.name for layer in model.layers]
    missing = [n for n in LAB_LAYERS if n not in names]
    if missing:
        raise LabError(f"{path}: not the lab's network: it lacks {', '.join(missing)}; "
                       f"its layers are {', '.join(names)}")
    baked = _baked_scale(path, model)
    if baked is not None:  # the Net keeps the scale; its model is the plain lab architecture
        model, saved_scale = lab_model(model), baked
    net = Net(model, name=path.stem, path=path)
    known = KNOWN_BADNETS.get(net.fingerprint)
    if scale is not None:
        net.scale, net.scale_source = _check_scale(scale, path), "given"
    elif saved_scale is not None:
        net.scale, net.scale_source = _check_scale(saved_scale, path), "saved with the model"
    elif known:
        net.scale, net.scale_source = known[1], f"known model: {known[0]}"
    else:
        net.scale, net.scale_source = RAW, "default for an unknown model (raw pixels, as the lab's BadNet)"
    return net


def _check_scale(scale, path) -> float:
    scale = float(scale)
    if not (0 < scale <= 1):
        raise LabError(f"{path}: input scale {scale} is not in (0, 1]; use 1 for raw 0..255 "
                       "pixels or 1/255 for pixels scaled to 0..1")
    return scale


def _refuse_unsafe(path: Path, config) -> None:
    """Raise if a model config holds anything but the lab's plain layers (no code can run)."""
    top = config.get("class_name") if isinstance(config, dict) else "Sequential"
    inner = config.get("config", {}) if isinstance(config, dict) else {}
    layers = config if isinstance(config, list) else inner.get("layers", [])
    bad = [] if top in MODEL_CLASSES else [f"model class {top}"]
    for layer in layers:
        cls, cfg = layer.get("class_name"), layer.get("config", {})
        lname = cfg.get("name", layer.get("name", "?"))
        if cls not in SAFE_LAYERS:
            bad.append(f"{lname} ({cls})")
        elif cfg.get("activation") not in SAFE_ACTIVATIONS:
            bad.append(f"{lname} (activation {cfg.get('activation')!r})")
    if bad:
        raise LabError(f"{path}: refused: layers outside the lab's architecture could run code "
                       f"from the file: {', '.join(bad)}; load it with trust=True (--trust) only "
                       "if you trust where it came from")


def _load_h5(path: Path, trust: bool):
    import keras

    try:
        with h5py.File(path, "r") as f:
            saved = f.attrs.get(SCALE_ATTR)
            if "model_config" not in f.attrs and "layer_names" in f.attrs:
                return _load_weights_file(path, f), saved
            if "model_config" not in f.attrs:
                raise LabError(f"{path}: an HDF5 file but neither a Keras model nor a weights "
                               f"file (top-level keys: {', '.join(sorted(f.keys())) or 'none'})")
            config = json.loads(_text(f.attrs["model_config"]))
    except OSError as err:
        raise LabError(f"{path}: cannot be read ({one_line(err)}); the file is "
                       "probably truncated: download or save it again") from None
    if not trust:
        _refuse_unsafe(path, config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(path, compile=False, safe_mode=not trust)
    except Exception as err:  # Keras reports broken files in many ways
        raise LabError(f"{path}: Keras could not load this model ({one_line(err)})") from None
    return model, saved


def _load_weights_file(path: Path, f: h5py.File):
    """Build the lab's architecture and fill it, layer by layer by name, from a weights file."""
    names = [_text(n) for n in f.attrs["layer_names"]]
    missing = [n for n in WEIGHTED_LAYERS if n not in names]
    if missing:
        raise LabError(f"{path}: not the lab's network: it lacks {', '.join(missing)}; "
                       f"its layers are {', '.join(names) or 'none'}")
    weights = {}
    for lname in WEIGHTED_LAYERS:
        group = f[lname]
        weights[lname] = [np.asarray(group[_text(w)]) for w in group.attrs["weight_names"]]
    num_classes = weights["output"][-1].shape[0]
    model = build_badnet(num_classes)
    for lname, values in weights.items():
        try:
            model.get_layer(lname).set_weights(values)
        except ValueError as err:
            raise LabError(f"{path}: layer {lname} does not fit the lab's architecture "
                           f"({one_line(err)})") from None
    return model


def _load_keras(path: Path, trust: bool):
    import keras

    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            extra = json.loads(z.read("labkit.json")) if "labkit.json" in z.namelist() else {}
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise LabError(f"{path}: not a readable .keras archive ({one_line(err)}); "
                       "save it again") from None
    if not trust:
        _refuse_unsafe(path, config)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except Exception as err:
        raise LabError(f"{path}: Keras could not load this model ({one_line(err)})") from None
    return model, extra.get("input_scale")


def save_model(net: Net, path: Path | str, protect: tuple = ()) -> Path:
    """Save a Net atomically as `.h5` (the course's format) or `.keras`, taking raw pixels.

    A scale other than 1 is saved as a Rescaling layer in front of the lab's network.

    Never overwrites a file listed in `protect` (the input model); an interrupted save leaves
    nothing behind.
    """
    path = Path(path)
    if path.suffix not in (".h5", ".keras"):
        raise LabError(f"{path}: save models as .h5 (the course's format) or .keras")
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # Keras calls .h5 'legacy'; it is the course's format
    try:
        with atomic_path(path, protect) as tmp:
            _save(net, tmp)
    finally:
        absl.setLevel(level)
    return path


def _save(net: Net, tmp: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab_model(net.model, net.scale).save(tmp)


def copy_net(net: Net, name: str | None = None) -> Net:
    """An independent copy of a Net (same weights, same scale): changing it leaves `net` alone."""
    import keras

    model = keras.models.clone_model(net.model)
    model.set_weights(net.model.get_weights())
    return Net(model, net.scale, net.scale_source, name or net.name, None)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

