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
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

from .data import BATCH, IMAGE_SHAPE, Lab, stored_dataset
from .errors import LabError, one_line
from .files import atomic_path, check_input, file_sha256  # noqa: F401 (file_sha256: labkit.models.file_sha256 stays)
from .portable import save_portable

# The lab's layers, in order; the pruning defense works on conv_3 and pool_3.
LAB_LAYERS = ("conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3",
              "conv_4", "fc_1", "fc_2", "output")
WEIGHTED_LAYERS = ("conv_1", "conv_2", "conv_3", "conv_4", "fc_1", "fc_2", "output")
SAFE_LAYERS = {"InputLayer", "Rescaling", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Add",
               "Activation"}
SAFE_ACTIVATIONS = {None, "relu", "softmax", "linear"}
MODEL_CLASSES = {"Functional", "Model", "Sequential"}
# Bounds on what a model file may declare, checked before anything is built or read
MAX_CLASSES = 10_000  # the course's lab has 1283 people
MAX_WEIGHTS = 160 * MAX_CLASSES  # values in one array: the output layer's kernel is the largest
MAX_MODEL_BYTES = 256 << 20  # a lab model with MAX_CLASSES classes is ~10 MB
MAX_ZIP_MEMBERS, MAX_ZIP_RATIO = 64, 100  # a .keras archive holds a few files of weights and JSON

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
    _probabilities_fn: object = field(default=None, init=False, repr=False)

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

    def probabilities(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """The output layer's softmax of each raw 0..255 image, float32 (N, num_classes)."""
        if self._probabilities_fn is None:
            import tensorflow as tf

            spec = tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32)
            self._probabilities_fn = tf.function(
                lambda x: self.model(x * self.scale, training=False), input_signature=[spec])
        images = np.asarray(images, np.float32)
        parts = [self._probabilities_fn(images[i:i + batch_size]).numpy()
                 for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_classes), np.float32)


def fingerprint(model) -> str:
    """Short hash of conv_1's kernel: names a network family (pruning leaves conv_1 alone)."""
    kernel = np.asarray(model.get_layer("conv_1").get_weights()[0], np.float32)
    return hashlib.sha256(kernel.tobytes()).hexdigest()[:16]


def load_badnet(lab: Lab, scale: float | None = None, trust: bool = False) -> Net:
    """The lab's BadNet B (`models/demo/bd_net.h5` or `models/bd_net.h5`)."""
    hint = lab.hint.format(folder=lab.badnet_path.parent).replace("download it", "download bd_net.h5")
    return load_model(lab.badnet_path, scale=scale, trust=trust, hint=hint)


def load_model(path: Path | str, scale: float | None = None, trust: bool = False,
               hint: str = "check the path") -> Net:
    """Load a BadNet from a Keras 2 full HDF5 model, a weights-only HDF5 file or a `.keras` file.

    The input scale comes from `scale` if given, else from the file (labkit records it), else
    from the list of known real BadNets, else it is raw pixels (the lab's convention).
    The file is untrusted: its format is decided from its content, and its configuration and
    declared sizes are checked against the lab's architecture before Keras builds or reads
    anything. Layers outside the lab's architecture are refused unless `trust=True`.
    """
    path = check_input(path, "model file", hint)
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise LabError(f"{path}: {path.stat().st_size >> 20} MB, far larger than any model of the "
                       f"lab's network (at most {MAX_MODEL_BYTES >> 20} MB); not a lab model")
    if _format(path) == "h5":
        model, saved_scale = _load_h5(path, trust)
    else:
        model, saved_scale = _load_keras(path, trust)
    bad = [w.path for w in model.weights if not np.isfinite(np.asarray(w)).all()]
    if bad:
        raise LabError(f"{path}: weights with NaN or infinite values ({', '.join(bad[:3])}); "
                       "the model is damaged: download or train it again")
    if saved_scale is not None:  # recorded by earlier labkit versions
        saved_scale = _check_scale(saved_scale, path, "saved in the file")
    baked = _baked_scale(path, model)
    if baked is not None:  # the Net keeps the scale; its model is the plain lab architecture
        model, saved_scale = lab_model(model), baked
    net = Net(model, name=path.stem, path=path)
    known = KNOWN_BADNETS.get(net.fingerprint)
    if scale is not None:
        net.scale, net.scale_source = _check_scale(scale, path, "given"), "given"
    elif saved_scale is not None:
        net.scale, net.scale_source = saved_scale, "saved with the model"
    elif known:
        net.scale, net.scale_source = known[1], f"known model: {known[0]}"
    else:
        net.scale, net.scale_source = RAW, "default for an unknown model (raw pixels, as the lab's BadNet)"
    return net


def _format(path: Path) -> str:
    """"h5" or "keras", from the file's bytes; its name must agree (Keras goes by the name)."""
    hdf5, zipped = h5py.is_hdf5(path), zipfile.is_zipfile(path)
    if hdf5 and zipped:
        raise LabError(f"{path}: refused: the file is both an HDF5 file and a zip archive "
                       "(crafted to be read two ways); download or save it again")
    if not (hdf5 or zipped):
        raise LabError(f"{path}: not a model file (neither HDF5 nor a Keras .keras archive); "
                       "download or save it again")
    fmt = "h5" if hdf5 else "keras"
    names = {"h5": (".h5", ".hdf5"), "keras": (".keras",)}[fmt]
    if path.suffix.lower() not in names:
        raise LabError(f"{path}: the file is {'an HDF5 model' if hdf5 else 'a .keras archive'} but "
                       f"its name ends in {path.suffix or 'nothing'}; rename it to end in {names[0]}")
    return fmt


def _check_scale(scale, path, where: str) -> float:
    if isinstance(scale, np.ndarray) and scale.shape == ():
        scale = scale[()]
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise LabError(f"{path}: input scale {where} is {_short(scale)}, not a number; pass "
                       "scale= (--scale) 1 for raw 0..255 pixels or 1/255 for pixels scaled to 0..1")
    scale = float(scale)
    if not (0 < scale <= 1):
        raise LabError(f"{path}: input scale {scale} is not in (0, 1]; use 1 for raw 0..255 "
                       "pixels or 1/255 for pixels scaled to 0..1")
    return scale


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_json(path: Path, raw, what: str):
    """JSON text from a model file (bytes or str), or a LabError naming what is wrong."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, np.bytes_)) else raw
        if not isinstance(text, str):
            raise ValueError(f"stored as {type(raw).__name__}, not text")
        text.encode("utf-8")  # h5py hands over undecodable bytes as lone surrogates
        return json.loads(text)
    except UnicodeError:
        raise LabError(f"{path}: the model's {what} is not UTF-8 text; the file is damaged or "
                       "not a Keras model: download or save it again") from None
    except ValueError as err:
        raise LabError(f"{path}: the model's {what} is not valid JSON ({one_line(err)}); the file "
                       "is damaged or not a Keras model: download or save it again") from None


def _load_h5(path: Path, trust: bool):
    import keras

    try:
        with h5py.File(path, "r") as f:
            _check_datasets(path, f)
            saved = f.attrs.get(SCALE_ATTR)
            if "model_config" not in f.attrs and "layer_names" in f.attrs:
                return _load_weights_file(path, f), saved
            if "model_config" not in f.attrs:
                raise LabError(f"{path}: an HDF5 file but neither a Keras model nor a weights "
                               f"file (top-level keys: {', '.join(sorted(f.keys())) or 'none'})")
            classes = _check_config(path, _parse_json(path, f.attrs["model_config"], "configuration"),
                                    trust)
            if "model_weights" not in f or not isinstance(f["model_weights"], h5py.Group):
                raise LabError(f"{path}: a model configuration without its weights "
                               "('model_weights' is missing); download or save it again")
            _weight_datasets(path, f["model_weights"], classes, trust)
    except OSError as err:
        raise LabError(f"{path}: cannot be read ({one_line(err)}); the file is "
                       "probably truncated: download or save it again") from None
    return _keras_load(path, keras.models.load_model, trust), saved


def _keras_load(path: Path, load, trust: bool):
    """Let Keras build a model whose file labkit has checked; its errors become one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(path, compile=False, safe_mode=not trust)
    except Exception as err:  # Keras reports broken files in many ways
        raise LabError(f"{path}: Keras could not load this model ({one_line(err)})") from None


def _check_datasets(path: Path, f: h5py.File) -> None:
    """Refuse an HDF5 model whose datasets declare more values than the lab's network holds."""
    sizes = []
    f.visititems(lambda _, obj: sizes.append(obj.size) if isinstance(obj, h5py.Dataset) else None)
    if max(sizes, default=0) > MAX_WEIGHTS or sum(sizes) > 4 * MAX_WEIGHTS:
        raise LabError(f"{path}: the file declares {sum(sizes)} weights ({max(sizes)} in one "
                       "array), far more than the lab's network has; not a lab model")


def _lab_weight_shapes(classes: int) -> dict:
    """{layer: [shapes of its weights]} of the lab's architecture with `classes` classes."""
    model = _reference()
    return {n: [tuple(w.shape[:-1]) + ((classes,) if n == "output" else tuple(w.shape[-1:]))
                for w in model.get_layer(n).weights] for n in WEIGHTED_LAYERS}


@lru_cache(maxsize=2)
def _reference(rescaled: bool = False):
    """The lab's architecture, with a Rescaling layer in front when `rescaled` (saved B' and G)."""
    return build_badnet(2, name="reference", scale=UNIT if rescaled else RAW)


def _weight_datasets(path: Path, group: h5py.Group, classes: int | None, trust: bool = False) -> dict:
    """The weight datasets of the lab's layers in a Keras 2 HDF5 weights group, checked (not read).

    Each listed layer has its group and `weight_names`, each name a dataset stored in the file,
    with the shape the lab's architecture gives it. Returns {layer: [datasets]}.
    """
    if "layer_names" not in group.attrs:
        raise LabError(f"{path}: the weights have no 'layer_names' list; download or save it again")
    names = [_text(n) for n in np.atleast_1d(group.attrs["layer_names"])]
    missing = [n for n in WEIGHTED_LAYERS if n not in names]
    if missing:
        raise LabError(f"{path}: not the lab's network: it lacks {', '.join(missing)}; "
                       f"its layers are {', '.join(names) or 'none'}")
    found = {}
    for lname in WEIGHTED_LAYERS:
        layer = group.get(lname)
        if not isinstance(layer, h5py.Group) or "weight_names" not in layer.attrs:
            raise LabError(f"{path}: the weights of layer {lname} are missing (no group or no "
                           "'weight_names'); download or save it again")
        found[lname] = []
        for wname in (_text(w) for w in np.atleast_1d(layer.attrs["weight_names"])):
            if wname not in layer:
                raise LabError(f"{path}: layer {lname} names a weight {wname} that is not in the "
                               "file; download or save it again")
            found[lname].append(stored_dataset(path, layer, wname))
    bias = found["output"][-1].shape
    if classes is None:
        classes = bias[0] if len(bias) == 1 else 0
    if not 2 <= classes <= MAX_CLASSES:
        raise LabError(f"{path}: the output layer has {classes} classes; the lab's network has "
                       f"2 to {MAX_CLASSES} (1283 in the course's lab)")
    expected = _lab_weight_shapes(classes)
    for lname, datasets in found.items():
        shapes = [d.shape for d in datasets]
        if shapes != expected[lname] and not trust:
            raise LabError(f"{path}: layer {lname} has weights of shapes {shapes}; the lab's "
                           f"architecture has {expected[lname]}: not the lab's network")
        if any(d.dtype.kind != "f" for d in datasets):
            raise LabError(f"{path}: layer {lname} holds weights that are not floating-point "
                           "numbers; download or save it again")
    return found


def _load_weights_file(path: Path, f: h5py.File):
    """Build the lab's architecture and fill it, layer by layer by name, from a weights file."""
    datasets = _weight_datasets(path, f, None)
    model = build_badnet(datasets["output"][-1].shape[0])
    for lname, values in datasets.items():
        model.get_layer(lname).set_weights([np.asarray(d) for d in values])
    return model


def _load_keras(path: Path, trust: bool):
    import keras

    try:
        with zipfile.ZipFile(path) as z:
            _check_zip(path, z)
            members = z.namelist()
            if "config.json" not in members:
                raise LabError(f"{path}: not a Keras .keras archive (no config.json); save it again")
            _check_config(path, _parse_json(path, z.read("config.json"), "configuration"), trust)
            if "model.weights.h5" in members:
                with z.open("model.weights.h5") as inner, h5py.File(inner, "r") as f:
                    _check_datasets(path, f)
            extra = (_parse_json(path, z.read("labkit.json"), "labkit record")
                     if "labkit.json" in members else {})
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
        raise LabError(f"{path}: not a readable .keras archive ({one_line(err)}); "
                       "save it again") from None
    if not isinstance(extra, dict):
        raise LabError(f"{path}: its labkit.json is not a JSON object; save the model again")
    return _keras_load(path, keras.saving.load_model, trust), extra.get("input_scale")


def _check_zip(path: Path, z: zipfile.ZipFile) -> None:
    """Refuse a zip that would inflate beyond a lab model (checked from its directory, before
    anything is extracted; Python's zipfile never inflates past the declared sizes)."""
    infos = z.infolist()
    total = sum(i.file_size for i in infos)
    ratios = [i.file_size / max(i.compress_size, 1) for i in infos if i.file_size > 1 << 20]
    if len(infos) > MAX_ZIP_MEMBERS or total > MAX_MODEL_BYTES or max(ratios, default=0) > MAX_ZIP_RATIO:
        raise LabError(f"{path}: refused: the archive would inflate to {total >> 20} MB in "
                       f"{len(infos)} files, more than a lab model (a zip bomb?); not a lab model")


def _check_config(path: Path, config, trust: bool) -> int:
    """Check a model configuration read from a file; return its number of classes.

    Its shape (a Keras functional model: a dict of layers, each a dict), that it asks for no
    code (only the lab's plain layers, unless `trust`), that it has the lab's layers, and that
    every layer has the lab's sizes and connections, all before Keras builds anything.
    """
    layers = _layers(path, config)
    if not trust:
        _refuse_code(path, config, layers)
    names = [layer["name"] for layer in layers]
    missing = [n for n in LAB_LAYERS if n not in names]
    if missing:
        raise LabError(f"{path}: not the lab's network: it lacks {', '.join(missing)}; "
                       f"its layers are {', '.join(names)}")
    for layer in layers:
        too_big = [k for k in ("units", "filters") if _count(layer["config"].get(k)) > MAX_CLASSES]
        if too_big:
            raise LabError(f"{path}: layer {layer['name']} declares {too_big[0]} = "
                           f"{_short(layer['config'][too_big[0]])}; the lab's network is far smaller")
    output = layers[names.index("output")]["config"].get("units")
    if not (isinstance(output, int) and 2 <= output <= MAX_CLASSES):
        raise LabError(f"{path}: the output layer has {_short(output)} classes; the lab's network "
                       f"has 2 to {MAX_CLASSES} (1283 in the course's lab)")
    if not trust:
        ours = _signatures(config)
        rescaled = any(layer["class_name"] == "Rescaling" for layer in layers)
        lab = _signatures(json.loads(_reference(rescaled).to_json()))
        wrong = [n for n in LAB_LAYERS if ours.get(n) != lab[n]]
        if wrong or len(layers) != len(lab):
            raise LabError(f"{path}: not the lab's network: layer {(wrong or ['count'])[0]} has other "
                           "sizes or connections than the lab's architecture (another input "
                           "size, a skip connection?); labkit works on the lab's network only")
    return output


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _layers(path: Path, config) -> list:
    """The layer list of a functional model's config, each layer a dict with a name and a config."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        raise LabError(f"{path}: the model's configuration is not a Keras functional model "
                       "(no list of layers); download or save it again")
    for i, layer in enumerate(layers):
        cfg = layer.get("config") if isinstance(layer, dict) else None
        name = layer.get("name", cfg.get("name") if isinstance(cfg, dict) else None) \
            if isinstance(layer, dict) else None
        if not (isinstance(cfg, dict) and isinstance(name, str)
                and isinstance(layer.get("class_name"), str)):
            raise LabError(f"{path}: layer {i} of the model's configuration is malformed (it "
                           "needs a class_name, a name and a config); download or save it again")
        layer.setdefault("name", name)
    return layers


def _refuse_code(path: Path, config: dict, layers: list) -> None:
    """Refuse a config naming anything but the lab's plain layers: it asks for code to run."""
    top = config.get("class_name")
    bad = [] if top in MODEL_CLASSES else [f"model class {_short(top)}"]
    for layer in layers:
        cls, act = layer["class_name"], layer["config"].get("activation")
        if cls not in SAFE_LAYERS:
            bad.append(f"{layer['name']} ({cls})")
        elif not (act is None or isinstance(act, str)) or act not in SAFE_ACTIVATIONS:
            bad.append(f"{layer['name']} (activation {_short(act)})")
    if bad:
        raise LabError(f"{path}: refused: the file asks for code labkit will not run: "
                       f"{', '.join(bad)}; load it with trust=True (--trust) only if you trust "
                       "where it came from")


def _signatures(config: dict) -> dict:
    """{layer name: what it computes}: its class, sizes and, recursively, its inputs' signatures.

    Two layers have equal signatures when they compute the same function of the input up to
    weights, whatever the intermediate layers are called.
    """
    layers = {layer["name"]: layer for layer in config["config"]["layers"]}
    done: dict = {}

    def sign(name, seen=()):
        if name in done:
            return done[name]
        if name not in layers or name in seen:
            return ("missing or cyclic", name)
        layer = layers[name]
        cfg = layer["config"]
        shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
        sizes = tuple(_freeze(cfg.get(k)) for k in ("filters", "kernel_size", "strides", "padding",
                                                     "pool_size", "activation"))
        units = None if name == "output" else _freeze(cfg.get("units"))
        parents = tuple(sorted(repr(sign(p, (*seen, name))) for p in _parents(layer.get("inbound_nodes"))))
        done[name] = (layer["class_name"], _freeze(shape), sizes, units, parents)
        return done[name]

    return {name: sign(name) for name in layers}


def _parents(nodes) -> list:
    """Names of the layers feeding a layer, from Keras 2 or Keras 3 `inbound_nodes`."""
    if isinstance(nodes, dict):
        history = nodes.get("keras_history")
        if isinstance(history, list) and history and isinstance(history[0], str):
            return [history[0]]
        return [p for v in nodes.values() for p in _parents(v)]
    if isinstance(nodes, list):
        if len(nodes) >= 3 and isinstance(nodes[0], str) and isinstance(nodes[1], int):
            return [nodes[0]]
        return [p for v in nodes for p in _parents(v)]
    return []


def _freeze(value):
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else \
        value if isinstance(value, (str, int, float, type(None))) else repr(value)


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
        save_portable(lab_model(net.model, net.scale), tmp)


def copy_net(net: Net, name: str | None = None) -> Net:
    """An independent copy of a Net (same weights, same scale): changing it leaves `net` alone."""
    import keras

    model = keras.models.clone_model(net.model)
    model.set_weights(net.model.get_weights())
    return Net(model, net.scale, net.scale_source, name or net.name, None)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

