"""`labkit.cache`: B's pool_3 and classes stored once per run, reused, renewed when a file changes;
a pruned B' evaluated from B's pool_3 equals the zeroed-weights network on every image."""
import numpy as np
import pytest

import labkit
from labkit import cache, metrics
from labkit.data import write_split
from labkit.goodnet import GoodNet
from labkit.prune import mean_activations, prune


@pytest.fixture
def stored(tiny_lab):
    return labkit.load_badnet(tiny_lab), tiny_lab


def test_entry_is_reused_and_equals_running_b(stored, monkeypatch):
    net, lab = stored
    first = cache.features(net, lab.valid, lab.cache_dir)
    assert len(list(lab.cache_dir.glob("valid-*.npz"))) == 1
    monkeypatch.setattr(cache, "_compute", lambda *a: pytest.fail("B ran again"))
    again = cache.features(net, lab.valid, lab.cache_dir)
    assert (again.pool_3 == first.pool_3).all() and (again.classes == first.classes).all()
    classes, labels = metrics.predict(net, lab.valid)
    assert (again.classes == classes).all() and (again.labels == labels).all()
    assert np.array_equal(again.means, mean_activations(net, lab.valid))


def test_a_changed_data_or_model_file_gets_a_new_entry(stored, tiny_net):
    net, lab = stored
    before = cache.features(net, lab.valid, lab.cache_dir)
    x, y = lab.valid.load()
    write_split(lab.valid.path, x[::-1], y[::-1])  # same size, other content
    after = cache.features(net, lab.valid, lab.cache_dir)
    assert (after.classes == before.classes[::-1]).all()
    assert len(list(lab.cache_dir.glob("valid-*.npz"))) == 1  # the stale entry is gone
    pruned = prune(net, [0, 1, 2])
    labkit.save_model(pruned, lab.badnet_path)
    renewed = cache.features(labkit.load_badnet(lab), lab.valid, lab.cache_dir)
    assert (renewed.pool_3[..., :3] == 0).all() and not (after.pool_3[..., :3] == 0).all()


def test_pruned_b_from_stored_pool_3_equals_the_zeroed_network(stored):
    net, lab = stored
    for channels in ([], [5], list(range(0, 60, 3)), list(range(60))):
        repaired = prune(net, channels)
        assert list(cache.pruned_channels(net, repaired)) == sorted(channels)
        for name in ("valid", "test"):
            mine = cache.predict(repaired, lab.split(name), lab.cache_dir, badnet=net)[0]
            assert (mine == metrics.predict(repaired, lab.split(name))[0]).all()
        g = metrics.predict(GoodNet(net, repaired), lab.test, cache=lab.cache_dir)[0]
        assert (g == GoodNet(net, repaired).predict(lab.test.load()[0])).all()


def test_a_b_prime_that_is_not_b_pruned_is_run_itself(stored, monkeypatch):
    net, lab = stored
    other = prune(net, [4])
    kernel, bias = other.model.get_layer("fc_1").get_weights()
    other.model.get_layer("fc_1").set_weights([kernel * 1.5, bias])
    assert cache.pruned_channels(net, other) is None
    ran = []
    monkeypatch.setattr(cache, "run", lambda n, s, **kw: ran.append(n) or (None, None))
    cache.predict(other, lab.test, lab.cache_dir, badnet=net)
    assert ran == [other]
