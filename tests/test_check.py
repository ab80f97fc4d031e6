"""Each task's check: passes the right answer, names the mistake (with a hint) for wrong ones."""
import keras
import numpy as np

from labkit import check
from labkit.data import write_split
from labkit.prune import pruning_order, stop_step
from labkit.sweep import sweep


def pool3_acts(net, split):
    sub = keras.Model(net.model.input, net.model.get_layer("pool_3").output)
    return np.asarray(sub(split.load()[0] * net.scale))


def assert_wrong(verdict, *words):
    assert not verdict.ok and verdict.startswith("✗") and "Hint:" in verdict, verdict
    assert "\n" not in verdict
    for word in words:
        assert word in verdict, verdict


def test_mean_activations(tiny_net, tiny_lab):
    acts = pool3_acts(tiny_net, tiny_lab.valid)
    right = check.mean_activations(acts.mean(axis=(0, 1, 2)), tiny_net, tiny_lab)
    assert right.ok and right.startswith("✓ correct")
    assert_wrong(check.mean_activations(acts.mean(axis=(0, 1)), tiny_net, tiny_lab), "wrong axes")
    assert_wrong(check.mean_activations(acts.mean(axis=(1, 2, 3)), tiny_net, tiny_lab), "wrong axes")
    scaled = keras.Model(tiny_net.model.input, tiny_net.model.get_layer("pool_3").output)(
        tiny_lab.valid.load()[0] * tiny_net.scale / 255)
    assert_wrong(check.mean_activations(np.mean(scaled, axis=(0, 1, 2)), tiny_net, tiny_lab), "1/255")
    on_test = pool3_acts(tiny_net, tiny_lab.test).mean(axis=(0, 1, 2))
    assert_wrong(check.mean_activations(on_test, tiny_net, tiny_lab), "test", "lab.valid")
    assert_wrong(check.mean_activations(acts.max(axis=(1, 2)).mean(axis=0), tiny_net, tiny_lab),
                 "maximum")


def test_pruning_order():
    means = np.array([0.5, 0.0, 2.0, 0.0, 1.0])
    assert check.pruning_order(pruning_order(means), means).ok
    assert check.pruning_order([3, 1, 0, 4, 2], means).ok  # ties in any order
    assert_wrong(check.pruning_order(pruning_order(means, "decreasing"), means), "decreasing")
    assert_wrong(check.pruning_order(np.sort(means), means), "np.argsort")
    assert_wrong(check.pruning_order([1, 3, 2, 4, 0], means), "not sorted")
    assert_wrong(check.pruning_order([0, 1, 2], means), "each of the 5 channel numbers")


def copy_of(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def zero(model, channels, layer="conv_3", bias=True, axis=-1):
    pruned = copy_of(model)
    kernel, b = pruned.get_layer(layer).get_weights()
    np.moveaxis(kernel, axis, -1)[..., channels] = 0
    if bias:
        b[channels] = 0
    pruned.get_layer(layer).set_weights([kernel, b])
    return pruned


def test_prune_channels(tiny_net):
    assert check.prune_channels(zero, tiny_net).ok
    assert_wrong(check.prune_channels(lambda m, c: zero(m, c, bias=False), tiny_net), "bias")
    assert_wrong(check.prune_channels(lambda m, c: zero(m, c, layer="conv_4"), tiny_net), "conv_4")
    assert_wrong(check.prune_channels(lambda m, c: zero(m, c, axis=2), tiny_net), "wrong axis")

    def in_place(model, channels):  # zeroes B itself: the check must say so and restore B
        kernel, b = model.get_layer("conv_3").get_weights()
        kernel[..., channels], b[channels] = 0, 0
        model.get_layer("conv_3").set_weights([kernel, b])
        return model

    before = tiny_net.model.get_layer("conv_3").get_weights()[1].copy()
    assert_wrong(check.prune_channels(in_place, tiny_net), "changed B itself")
    assert np.array_equal(tiny_net.model.get_layer("conv_3").get_weights()[1], before)


def test_stop_step():
    assert check.stop_step(stop_step).ok

    def late(acc, drop):  # ">" instead of ">=": a drop of exactly X does not count
        hits = np.flatnonzero(acc[0] - acc > drop)
        return int(hits[0]) if hits.size else None

    def early(acc, drop):  # the last step before the drop
        k = stop_step(acc, drop)
        return None if k is None else k - 1

    assert_wrong(check.stop_step(late), "one channel late", "AT LEAST")
    assert_wrong(check.stop_step(early), "one channel early")
    never = stop_step  # returns len(acc) instead of None when the drop is never reached
    assert_wrong(check.stop_step(lambda acc, drop: len(acc) if never(acc, drop) is None
                                 else never(acc, drop)), "never reached")


def test_pruning_loop(tiny_net, tiny_lab):
    x, y = tiny_lab.test.load()
    y[:6] = (y[:6] + 1) % 10  # the test set's accuracy differs from the validation set's
    write_split(tiny_lab.test.path, x, y)
    right = sweep(tiny_net, tiny_lab.valid).table.valid_accuracy.to_numpy()[:41]
    assert check.pruning_loop(right, tiny_net, tiny_lab).ok
    on_test = sweep(tiny_net, tiny_lab.valid, test=tiny_lab.test).table.test_accuracy.to_numpy()[:41]
    assert_wrong(check.pruning_loop(on_test, tiny_net, tiny_lab), "test set")
    decreasing = sweep(tiny_net, tiny_lab.valid, order="decreasing").table.valid_accuracy.to_numpy()[:41]
    assert_wrong(check.pruning_loop(decreasing, tiny_net, tiny_lab), "decreasing")
    assert_wrong(check.pruning_loop(right / 100, tiny_net, tiny_lab), "fractions")
    # judged along the student's own order (Task 2): a wrong order costs that task only
    increasing, backwards = (sweep(tiny_net, tiny_lab.valid, order=o).order for o in ("increasing", "decreasing"))
    assert check.pruning_loop(decreasing, tiny_net, tiny_lab, backwards).ok
    assert_wrong(check.pruning_loop(right, tiny_net, tiny_lab, backwards), "not B's")
    assert_wrong(check.pruning_loop(decreasing, tiny_net, tiny_lab, increasing), "decreasing")
    assert check.pruning_loop(right, tiny_net, tiny_lab, np.sort(backwards) / 2).ok  # not an order


def test_goodnet_rule():
    assert check.goodnet_rule(lambda b, b2, n: np.where(b == b2, b, n)).ok
    assert_wrong(check.goodnet_rule(lambda b, b2, n: np.where(b == b2, b, n - 1)), "N-1", "real person")
    assert_wrong(check.goodnet_rule(lambda b, b2, n: np.where(b == b2, b, 0)), "answers 0")
    assert_wrong(check.goodnet_rule(lambda b, b2, n: b2), "B''s class")
    assert_wrong(check.goodnet_rule(lambda b, b2, n: np.where(b == b2, b2, n)[:3]), "one class per input")


def test_split_faces():
    from labkit.finetune import split_faces

    assert check.split_faces(split_faces).ok

    def cut(x, y, order, share):
        k = int(round(len(y) * (1 - share)))
        return (x[order[:k]], y[order[:k]]), (x[order[k:]], y[order[k:]])

    def perm(seed, n):
        return np.random.default_rng(seed).permutation(n)

    assert_wrong(check.split_faces(lambda x, y, s, seed: cut(x, y, np.arange(len(y)), s)),
                 "last faces of the file", "sorted by person")
    assert_wrong(check.split_faces(lambda x, y, s, seed: cut(x, y, perm(seed, len(y)), 1 - s)),
                 "parts are swapped")
    assert_wrong(check.split_faces(lambda x, y, s, seed: (cut(x, y, perm(seed, len(y)), s)[0],
                                                          cut(x, y, perm(seed + 1, len(y)), s)[1])),
                 "faces are in both parts", "trained on")
    assert_wrong(check.split_faces(lambda x, y, s, seed: cut(x, y, perm(None, len(y)), s)),
                 "same seed gave other parts")
    assert_wrong(check.split_faces(lambda x, y, s, seed: cut(x, y, perm(0, len(y)), s)),
                 "another seed gave the same parts")
    assert_wrong(check.split_faces(lambda x, y, s, seed: cut(x, y, perm(seed, len(y)), 0.3)),
                 "watch part has the wrong size")
    assert_wrong(check.split_faces(lambda x, y, s, seed: cut(x, y, perm(seed, len(y))[::-1], s)),
                 "not the lab's split")

    def shuffled_labels(x, y, s, seed):
        (xt, yt), (xw, yw) = cut(x, y, perm(seed, len(y)), s)
        return (xt, np.sort(yt)), (xw, yw)
    assert_wrong(check.split_faces(shuffled_labels), "labels no longer belong to their faces")
    assert_wrong(check.split_faces(lambda x, y, s, seed: None), "raised TypeError")
