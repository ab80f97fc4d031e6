"""The lab's network (DeepID style): build it, wrap it in a `Net`, copy it, save it.

Every model comes wrapped in a `Net` that knows its input preprocessing (`scale`: the lab's
BadNet takes raw pixels 0..255, the CSAW-HackML-2020 BadNets take pixels / 255), so callers
always pass raw 0..255 images. Loading a model file (untrusted) is `labkit.modelfile`.
Shown in 01_evaluate.ipynb.
"""
from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import BATCH, IMAGE_SHAPE
from .errors import LabError
from .files import atomic_path
from .portable import save_portable

# The lab's layers, in order; the pruning defense works on conv_3 and pool_3.
LAB_LAYERS = ("conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3",
              "conv_4", "fc_1", "fc_2", "output")
WEIGHTED_LAYERS = ("conv_1", "conv_2", "conv_3", "conv_4", "fc_1", "fc_2", "output")
CONV, POOL = "conv_3", "pool_3"  # the layer pruned and the pooling layer right after it
RAW, UNIT = 1.0, 1 / 255  # input scales: pixels 0..255 as they are, or divided by 255

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


def zeroed_channels(net: Net) -> np.ndarray:
    """The `conv_3` channels whose kernel and bias are all exactly zero (the pruned ones)."""
    kernel, bias = net.model.get_layer(CONV).get_weights()
    return np.flatnonzero(~kernel.any(axis=(0, 1, 2)) & (bias == 0))


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
