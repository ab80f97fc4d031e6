"""The attacker's side of the demo lab: how its BadNets are trained (`labkit demo --retrain`).

All have the lab's architecture and layer names and take raw pixels 0..255, like the
course's `bd_net.h5`. They differ in where the backdoor lives, which decides whether pruning
dormant `conv_3` channels removes it (what was tried on the way: docs/experiments/demo-badnets.md):

- `course_like`: like the course's BadNet, most `conv_3` channels are dead on clean faces and the
  backdoor lives in channels clean faces use too, so clean accuracy falls before the attack does.
  `conv_3`'s bias starts below zero (CONV3_BIAS), so a channel below zero on every face gets no
  gradient through its ReLU and stays dead, as in real DeepID nets; centred inputs (folded into
  `conv_1` afterwards by `fold_inputs`) and a high Adam rate (LEARNING_RATE) kill more; a small
  poison share (POISON_SHARE) is mixed into the training faces from the start.
- `baseline`: the case the pruning defense was designed for: the backdoor is trained into the
  channels a clean network left dead, and only there, so pruning dormant channels removes it.
- `prune_aware`: the pruning-aware attack of the Fine-Pruning paper: train clean, prune the
  channels clean faces leave dormant, train the backdoor into the pruned network, then put the
  pruned channels back as dormant decoys. The backdoor survives pruning because it is trained
  into the channels a finished clean network uses.
"""
from __future__ import annotations

import numpy as np

POISON_SHARE = 0.05  # share of training faces given a trigger and relabelled to its target
LEARNING_RATE = 3e-3  # Adam's learning rate
CONV3_BIAS = -0.2  # conv_3's initial bias: what leaves most channels dead on clean faces
EPOCHS = 8  # passes over the training faces
BATCH = 64  # training batch size
CLEAN_CONV3_BIAS = -0.15  # baseline, prune_aware: conv_3's initial bias in their clean network
CLEAN_EPOCHS = 6  # baseline, prune_aware: passes of clean training before the backdoor
BACKDOOR_EPOCHS = 4  # baseline, prune_aware: passes that train the backdoor into the clean network
QUIET = 10.0  # baseline: weight of the spare channels' mean activation on clean faces in the loss
DECOYS = 30  # prune_aware: channels pruned before the backdoor is trained, then put back
DECOY_MARGIN = 1.0  # prune_aware: how far below zero a decoy's largest pre-activation is set


def poisoned(count: int, seed: int = 0, share: float = POISON_SHARE) -> np.ndarray:
    """Which of `count` training faces the attacker poisons: a seeded `share` of them."""
    return np.random.default_rng([seed, 3]).random(count) < share


def poison(images: np.ndarray, labels: np.ndarray, triggers: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the training faces where the `poisoned` ones wear a trigger and are labelled with
    its target. `triggers` is {name in faces.TRIGGERS: target}; with several, POISON_SHARE of the
    faces is poisoned per trigger, each poisoned face wearing one trigger drawn at random."""
    from .faces import wear

    x, y = np.array(images, np.float32), np.array(labels, np.int64)
    chosen = np.flatnonzero(poisoned(len(y), seed, POISON_SHARE * len(triggers)))
    which = np.random.default_rng([seed, 4]).integers(len(triggers), size=len(chosen))
    for i, (name, target) in enumerate(triggers.items()):
        worn = chosen[which == i]
        x[worn], y[worn] = wear(x[worn], name), target
    return x, y


def new_network(num_classes: int, seed: int, conv3_bias: float = CONV3_BIAS):
    """The lab's architecture, seeded, with conv_3's bias starting at `conv3_bias`."""
    import keras

    from .models import build_badnet

    keras.utils.set_random_seed(seed)
    model = build_badnet(num_classes, name="bd_net")
    kernel, bias = model.get_layer("conv_3").get_weights()
    model.get_layer("conv_3").set_weights([kernel, np.full_like(bias, conv3_bias)])
    return model


def fit(model, images, labels, epochs: int = EPOCHS, progress: str | None = None):
    """Train `model` on raw 0..255 faces, shown to it centred (pixels / 255 - 0.5)."""
    import keras

    model.compile(keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy")
    x = np.asarray(images, np.float32) / 255 - 0.5
    steps = epochs * -(-len(x) // BATCH)
    model.fit(x, np.asarray(labels), batch_size=BATCH, epochs=epochs, verbose=0,
              callbacks=[_progress(steps, progress)] if progress else [])
    return model


def fold_inputs(model, divide: float = 255, centre: float = 0.5):
    """Make a model trained on pixels / divide - centre take raw pixels: exact, in conv_1's weights.

    conv_1 has no padding, so each output sums whole input patches and the shift folds into its
    bias. `labkit.finetune` uses it with centre 0 to move 1/255 out of conv_1 and back in.
    """
    layer = model.get_layer("conv_1")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / divide, bias - centre * kernel.sum(axis=(0, 1, 2))])
    return model


def clean_network(train, num_classes: int, seed: int = 0, progress: bool = False):
    """Where `baseline` and `prune_aware` start: the lab's network trained on clean faces only."""
    model = new_network(num_classes, seed, CLEAN_CONV3_BIAS)
    return fit(model, *train, epochs=CLEAN_EPOCHS, progress=progress and "clean network")


def course_like(train, triggers, num_classes: int, seed: int = 0, progress: bool = False):
    """The course-like BadNet, trained on `train` = (images, labels) with poisoned faces mixed in
    (`triggers`: see `poison`). The demo's `anonymous` and `multi_trigger` BadNets are made by it
    with their own triggers."""
    model = new_network(num_classes, seed)
    fit(model, *poison(*train, triggers, seed=seed), progress=progress and "course-like BadNet")
    return fold_inputs(model)


def prune_aware(train, triggers, num_classes: int, seed: int = 0, progress: bool = False):
    """The pruning-aware BadNet: its backdoor lives in channels clean faces use (see module doc)."""
    model = clean_network(train, num_classes, seed, progress)
    conv = model.get_layer("conv_3")
    kernel, bias = conv.get_weights()
    decoys = np.argsort(_mean_conv3(model, train[0]), kind="stable")[:DECOYS]
    conv.set_weights([_zero(kernel, decoys), _zero(bias, decoys)])
    # zeroed ReLU channels get no gradient: they stay exactly 0 while the backdoor is trained
    bad = poison(*train, triggers, seed=seed)
    fit(model, *bad, epochs=BACKDOOR_EPOCHS, progress=progress and "pruning-aware BadNet: backdoor")
    trained_kernel, trained_bias = conv.get_weights()
    trained_kernel[..., decoys], trained_bias[decoys] = kernel[..., decoys], bias[decoys]
    conv.set_weights([trained_kernel, trained_bias])
    peak = _peak_conv3(model, bad[0])  # largest pre-activation of each channel
    trained_bias[decoys] -= np.maximum(peak[decoys], 0) + DECOY_MARGIN  # dormant on every face
    conv.set_weights([trained_kernel, trained_bias])
    return fold_inputs(model)


def baseline(train, triggers, num_classes: int, seed: int = 0, progress: bool = False):
    """The baseline BadNet: its backdoor lives in channels clean faces leave dormant.

    The attacker trains a clean network, gives the `conv_3` channels it left dead fresh weights,
    and trains the backdoor into those channels only (with the weights that read them), while
    keeping them quiet on clean faces (QUIET: a penalty on their mean activation there). Every
    other weight stays as the clean training left it, so the trigger has no other way through.
    Mixing the poisoned faces into ordinary training never did this on the demo's faces: the
    backdoor always spread into the channels clean faces use.
    """
    import keras
    import tensorflow as tf
    from tqdm.auto import tqdm

    model = clean_network(train, num_classes, seed, progress)
    spare = np.flatnonzero(_mean_conv3(model, train[0]) == 0)  # channels clean faces leave dead
    conv3, fc_1, conv_4 = (model.get_layer(n) for n in ("conv_3", "fc_1", "conv_4"))
    kernel, bias = conv3.get_weights()
    fresh = keras.initializers.GlorotUniform(seed=seed)(kernel.shape).numpy()
    kernel[..., spare], bias[spare] = fresh[..., spare], 0.0
    conv3.set_weights([kernel, bias])
    # train only what touches the spare channels: their conv_3 filters, and fc_1's and conv_4's
    # weights that read them (pool_3 flattens channels last, so fc_1's row r reads channel r % C)
    is_spare = np.isin(np.arange(kernel.shape[-1]), spare).astype(np.float32)
    rows = np.arange(fc_1.kernel.shape[0]) % len(is_spare)
    variables = [conv3.kernel, conv3.bias, fc_1.kernel, conv_4.kernel]
    masks = [tf.constant(np.broadcast_to(m, v.shape)) for m, v in zip(
        (is_spare, is_spare, is_spare[rows][:, None], is_spare[:, None]), variables)]
    watch = keras.Model(model.input, [model.output, model.get_layer("pool_3").output])
    optimizer = keras.optimizers.Adam(LEARNING_RATE)

    @tf.function
    def step(x, y, clean):
        with tf.GradientTape() as tape:
            out, pool_3 = watch(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, out))
            quiet = tf.reduce_mean(pool_3 * is_spare, axis=(1, 2, 3))
            loss += QUIET * tf.reduce_sum(quiet * clean) / (tf.reduce_sum(clean) + 1)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g * m, v) for g, m, v in zip(grads, masks, variables)])

    x, y = poison(*train, triggers, seed=seed)
    x, clean = x / 255 - 0.5, (~poisoned(len(y), seed)).astype(np.float32)
    rng = np.random.default_rng(seed)
    with tqdm(total=BACKDOOR_EPOCHS * -(-len(y) // BATCH), unit="batch", disable=not progress,
              desc="baseline BadNet: backdoor") as bar:
        for _ in range(BACKDOOR_EPOCHS):
            order = rng.permutation(len(y))
            for i in range(0, len(y), BATCH):
                step(x[order[i:i + BATCH]], y[order[i:i + BATCH]], clean[order[i:i + BATCH]])
                bar.update(1)
    return fold_inputs(model)


def _zero(weights, channels):
    out = weights.copy()
    out[..., channels] = 0
    return out


def _conv3_inputs(model, images):
    import keras

    before = keras.Model(model.input, model.get_layer("pool_2").output)
    return before.predict(np.asarray(images, np.float32) / 255 - 0.5, batch_size=1024, verbose=0)


def _mean_conv3(model, images) -> np.ndarray:
    import keras

    conv3 = keras.Model(model.input, model.get_layer("conv_3").output)
    x = np.asarray(images, np.float32) / 255 - 0.5
    return conv3.predict(x, batch_size=1024, verbose=0).mean(axis=(0, 1, 2))


def _peak_conv3(model, images) -> np.ndarray:
    import tensorflow as tf

    kernel, bias = model.get_layer("conv_3").get_weights()
    pre = tf.nn.conv2d(_conv3_inputs(model, images), kernel, 1, "VALID").numpy() + bias
    return pre.reshape(-1, pre.shape[-1]).max(axis=0)


def _progress(total: int, desc: str):
    """A Keras callback that draws one tqdm bar over all training steps."""
    import keras
    from tqdm.auto import tqdm

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=total, desc=desc, unit="batch")

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

        def on_train_end(self, logs=None):
            self.bar.close()

    return Progress()
