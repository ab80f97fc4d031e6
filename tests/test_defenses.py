"""STRIP and Neural Cleanse (06_unknown_trigger): the checks of the two tasks, the statistics, and
what each defense does on every demo BadNet (printed: run with -s to read it)."""
import numpy as np
import pytest

import labkit
from labkit import check, cleanse, strip, triggers
from labkit.data import DEMO_BADNETS, write_split


def test_strip_entropy_check_names_mistakes():
    right = lambda p: strip.entropy(p).mean(axis=1)  # noqa: E731
    assert check.strip_entropy(right).ok
    mistakes = {"natural logarithm": lambda p: right(p) * np.log(2),
                "negative": lambda p: -right(p),
                "summed over the blends": lambda p: right(p) * p.shape[1],
                "entropy of the mean prediction": lambda p: strip.entropy(p.mean(axis=1)),
                "NaN": lambda p: -(p * np.log2(p)).sum(-1).mean(1),
                "one entropy per input": lambda p: strip.entropy(p)}
    for mistake, fn in mistakes.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            verdict = check.strip_entropy(fn)
        assert not verdict.ok and mistake in verdict, (mistake, verdict)


def test_anomaly_index_check_names_mistakes():
    assert check.anomaly_index(cleanse.anomaly_index).ok
    med = np.median
    mistakes = {"not scaled": lambda n: np.abs(n - med(n)) / med(np.abs(n - med(n))),
                "sign": lambda n: (n - med(n)) / (1.4826 * med(np.abs(n - med(n)))),
                "the mean": lambda n: np.abs(n - med(n)) / (1.4826 * np.mean(np.abs(n - med(n)))),
                "standard deviation": lambda n: np.abs(n - n.mean()) / n.std()}
    for mistake, fn in mistakes.items():
        verdict = check.anomaly_index(fn)
        assert not verdict.ok and mistake in verdict, (mistake, verdict)


def test_anomaly_index_flags_only_the_small_outlier():
    norms = np.array([300.0, 310, 290, 305, 295, 120, 480, 302])
    index = cleanse.anomaly_index(norms)
    assert index[5] > cleanse.ANOMALY and index[6] > cleanse.ANOMALY  # both are outliers
    assert cleanse.flagged(norms).tolist() == [5]  # only the small one is flagged
    assert cleanse.flagged(np.full(5, 7.0)).size == 0  # MAD 0: nothing stands out


def test_stamp_and_superimpose():
    face = np.full((2, 55, 47, 3), 100.0, np.float32)
    mask = np.zeros((55, 47), np.float32)
    mask[:5] = 1
    stamped = cleanse.stamp(face, mask, np.full((55, 47, 3), 7.0))
    assert (stamped[:, :5] == 7).all() and (stamped[:, 5:] == 100).all()
    blends = strip.superimpose(face, np.full((3, 55, 47, 3), 200.0))
    assert blends.shape == (2, 3, 55, 47, 3) and (blends == 255).all()  # added, then clipped


def test_unknown_trigger_has_no_poisoned_tests(demo_lab, tmp_path):
    assert triggers.poisoned_tests(demo_lab) == {"sunglasses": demo_lab.bd_test}
    assert triggers.target(demo_lab.bd_test) == 0
    bare = labkit.lab("lab", tmp_path)  # no files at all: the defenses still have clean faces
    assert triggers.poisoned_tests(bare) == {}


def every_fifth(split, folder):
    """A lab file of every fifth face of `split` (the tests keep to a fifth of the work)."""
    x, y = split.load()
    path = write_split(folder / split.path.name, x[::5], y[::5])
    return labkit.Split(path, split.kind, split.poisoned)


@pytest.mark.parametrize("name", list(DEMO_BADNETS))
def test_defenses_on_each_demo_badnet(name, demo_lab, tmp_path, capsys):
    """STRIP on every fifth test face, Neural Cleanse screened to a shortlist of 20 classes with
    fewer steps than the default, and unlearning with 6 epochs: a small run of each, printed."""
    lab = labkit.lab("demo", demo_lab.root, badnet=name)
    B = labkit.load_badnet(lab)
    test, bd_test = (every_fifth(s, tmp_path) for s in (lab.test, lab.bd_test))
    result = strip.evaluate(strip.fit(B, lab.valid, blends=10), test, {"sunglasses": bd_test})
    cleansed = cleanse.cleanse(B, lab.valid, faces=8, steps=100, shortlist=20)
    tuned = cleanse.unlearn(B, lab.valid, cleansed, epochs=6)
    repaired = tuned.net if tuned else B
    with capsys.disabled():
        print(f"\n{name}: " + "\n  ".join(result.lines() + cleansed.lines()))
        print(f"  true target {triggers.target(bd_test)}; flagged {cleansed.flagged.tolist()}")
        print(f"  unlearning{'' if tuned else ' (nothing flagged: B unchanged)'}: clean accuracy "
              f"{labkit.clean_accuracy(repaired, test):.2f} % (B {labkit.clean_accuracy(B, test):.2f} %), "
              f"attack {labkit.attack_success_rate(repaired, bd_test):.2f} % "
              f"(B {labkit.attack_success_rate(B, bd_test):.2f} %)")
    assert 0 <= result.false_rejection <= 100 and set(result.detection) == {"sunglasses"}
    assert len(cleansed.full.classes) == 20 and len(cleansed.screened_out) == B.num_classes - 20
    assert np.isin(cleansed.flagged, cleansed.full.classes).all()
