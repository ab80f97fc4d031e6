"""STRIP and Neural Cleanse (06_unknown_trigger): the checks of the two tasks, the statistics, and
what each defense does on two more demo BadNets (printed: run with -s to read it)."""
import numpy as np
import pytest

import labkit
from labkit import check, cleanse, strip, triggers
from labkit.data import BADNET_TRIGGERS, TRIGGERS, write_split


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


def test_probabilities_are_the_softmax_whose_argmax_predict_gives(tiny_net):
    from conftest import tiny_faces

    x = tiny_faces(50, seed=3)[0]
    p = tiny_net.probabilities(x, batch_size=16)
    assert p.shape == (50, 10) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert (p.argmax(axis=1) == tiny_net.predict(x)).all()


def test_stamp_and_superimpose():
    face = np.full((2, 55, 47, 3), 100.0, np.float32)
    mask = np.zeros((55, 47), np.float32)
    mask[:5] = 1
    stamped = cleanse.stamp(face, mask, np.full((55, 47, 3), 7.0))
    assert (stamped[:, :5] == 7).all() and (stamped[:, 5:] == 100).all()
    blends = strip.superimpose(face, np.full((3, 55, 47, 3), 200.0))
    assert blends.shape == (2, 3, 55, 47, 3) and (blends == 255).all()  # added, then clipped


def test_strip_measures_a_seeded_sample_of_a_larger_file(tiny_net, tiny_lab):
    detector = strip.fit(tiny_net, tiny_lab.valid, blends=5, faces=10)
    assert len(detector.valid_entropy) == 10  # of the 35 validation faces not blended with
    poisoned = {"sunglasses": tiny_lab.bd_test}
    some, again = (strip.evaluate(detector, tiny_lab.test, poisoned, faces=10) for _ in range(2))
    whole = strip.evaluate(detector, tiny_lab.test, poisoned, faces=None)
    assert some.sizes == whole.sizes == {"clean": 40, "sunglasses": 40}
    assert [len(h) for h in some.entropies.values()] == [10, 10] and len(whole.entropies["clean"]) == 40
    assert np.array_equal(some.entropies["clean"], again.entropies["clean"])  # seeded: the same faces
    assert (np.abs(some.entropies["clean"][:, None] - whole.entropies["clean"]).min(axis=1) < 1e-4).all()
    assert "10 of 40 measured" in some.lines()[1] and "measured" not in whole.lines()[1]
    with pytest.raises(labkit.LabError, match="faces 0: give a whole number"):
        strip.evaluate(detector, tiny_lab.test, poisoned, faces=0)


def test_unknown_trigger_has_no_poisoned_tests(demo_lab, tmp_path):
    found = triggers.poisoned_tests(demo_lab)
    assert {t: s.path for t, s in found.items()} == {"sunglasses": demo_lab.bd_test.path}
    assert triggers.target(demo_lab.bd_test) == 0
    bare = labkit.lab("lab", tmp_path)  # no files at all: the defenses still have clean faces
    assert triggers.poisoned_tests(bare) == {}
    anonymous = labkit.lab("demo", demo_lab.root, badnet="anonymous")
    assert triggers.poisoned_tests(anonymous) == {}  # its trigger is the grader's
    assert triggers.poisoned_tests(anonymous, grader=tmp_path) == {}  # nothing revealed there


def every_fifth(split, folder):
    """A lab file of every fifth face of `split` (the tests keep to a fifth of the work)."""
    x, y = split.load()
    path = write_split(folder / split.path.name, x[::5], y[::5])
    return labkit.Split(path, split.kind, split.poisoned)


@pytest.mark.parametrize("name", ["anonymous", "multi_trigger"])  # no poisoned file, three (nbval: "course", one)
def test_defenses_on_demo_badnets(name, demo_lab, tmp_path, capsys):
    """STRIP with 10 blends on every fifth test face, Neural Cleanse on all 100 classes with 4
    faces and 40 steps (the default: 8 and 200) and unlearning with 72 steps (144): a small run of
    each, printed (`labkit bench --defenses` measures them at their defaults)."""
    lab = labkit.lab("demo", demo_lab.root, badnet=name)
    B = labkit.load_badnet(lab)
    test = every_fifth(lab.test, tmp_path)
    poisoned = {t: every_fifth(s, tmp_path) for t, s in triggers.poisoned_tests(lab).items()}
    result = strip.evaluate(strip.fit(B, lab.valid, blends=10), test, poisoned)
    cleansed = cleanse.cleanse(B, lab.valid, faces=4, steps=40)
    tuned = cleanse.unlearn(B, lab.valid, cleansed, steps=72)
    repaired = tuned.net if tuned else B
    true = {t: TRIGGERS[t] for t in BADNET_TRIGGERS.get(name, ("sunglasses",))}
    with capsys.disabled():
        print(f"\n{name}: " + "\n  ".join(result.lines() + cleansed.lines()))
        print(f"  true targets {true}; flagged {cleansed.flagged.tolist()}")
        print(f"  unlearning{'' if tuned else ' (nothing flagged: B unchanged)'}: clean accuracy "
              f"{labkit.clean_accuracy(repaired, test):.2f} % (B {labkit.clean_accuracy(B, test):.2f} %)"
              + "".join(f", {t} attack {labkit.attack_success_rate(repaired, s):.2f} % "
                        f"(B {labkit.attack_success_rate(B, s):.2f} %)" for t, s in poisoned.items()))
    assert 0 <= result.false_rejection <= 100 and set(result.detection) == set(poisoned)
    assert len(cleansed.full.classes) == B.num_classes and cleansed.screened_out == {}
    assert (cleansed.anomaly[np.isin(cleansed.full.classes, cleansed.flagged)] > cleanse.ANOMALY).all()


@pytest.mark.parametrize("command, expect", [
    (["strip", "M", "V", "T", "MISSING"], "poisoned test file not found"),
    (["strip", "M", "V", "MISSING"], "clean test file not found"),
    (["cleanse", "MISSING", "V"], "model file not found"),
    (["cleanse", "M", "M"], "a lab file needs datasets 'data' and 'label'"),
])
def test_strip_and_cleanse_check_inputs_before_tensorflow_starts(tiny_lab, tmp_path, capsys,
                                                                 monkeypatch, command, expect):
    from hostile import forbid
    from labkit import cli

    forbid(monkeypatch, cli, "import_tensorflow_quietly", "TensorFlow started")
    files = {"M": tiny_lab.badnet_path, "V": tiny_lab.valid.path, "T": tiny_lab.test.path,
             "MISSING": tmp_path / "nope.h5"}
    assert cli.main([str(files[a]) if a in files else a for a in command]) == 2
    assert expect in capsys.readouterr().err


@pytest.mark.parametrize("extra, expect", [
    (["strip", "--frr", "0"], "false rejection rate 0.0"),
    (["strip", "--blends", "40"], "the validation file has only 40 faces"),
    (["strip", "BD", "BD"], "give each a different name"),
    (["cleanse", "--steps", "0"], "steps 0: give a whole number of at least 1"),
    (["cleanse", "--faces", "41"], "faces 41: give a whole number from 1 to 40"),
    (["cleanse", "OLD"], "already exists"),
])
def test_strip_and_cleanse_refusals_come_before_the_work(tiny_lab, tmp_path, capsys, monkeypatch,
                                                         extra, expect):
    from hostile import forbid
    from labkit import cli

    forbid(monkeypatch, cleanse, "search", "the trigger search ran")
    forbid(monkeypatch, strip, "strip_entropy", "STRIP ran")
    command, options = extra[0], [a for a in extra[1:] if a not in ("BD", "OLD")]
    args = [command, str(tiny_lab.badnet_path), str(tiny_lab.valid.path)]
    if command == "strip":
        args += [str(tiny_lab.test.path)] + [str(tiny_lab.bd_test.path)] * extra.count("BD")
    else:
        args += ["--out", str(tmp_path)]
    if "OLD" in extra:
        (tmp_path / "neural_cleanse.json").write_text("{}")
    code = cli.main(args + options)
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
    if "OLD" in extra:
        assert (tmp_path / "neural_cleanse.json").read_text() == "{}"


def test_strip_and_cleanse_commands_write_their_outputs(tiny_lab, tmp_path, capsys):
    import json

    from labkit import cli

    out = tmp_path / "strip.json"
    assert cli.main(["strip", str(tiny_lab.badnet_path), str(tiny_lab.valid.path),
                     str(tiny_lab.test.path), str(tiny_lab.bd_test.path), "--blends", "4",
                     "--out", str(out)]) == 0
    info = json.loads(out.read_text())
    assert set(info["detection"]) == {"bd_test"} and 0 <= info["false_rejection"] <= 100
    assert cli.main(["cleanse", str(tiny_lab.badnet_path), str(tiny_lab.valid.path), "--steps", "3",
                     "--faces", "4", "--unlearn", "--out", str(tmp_path / "nc")]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "nc" / "neural_cleanse.json").read_text())
    assert len(record["classes"]) == 10 and record["screened_out"] == {}
    assert (tmp_path / "nc" / "unlearned.h5").is_file() == bool(record["flagged"])
    assert ("nothing flagged" in printed) == (not record["flagged"])


def test_courses_eval_opens_the_unlearning_repair(tiny_lab, tiny_net, tmp_path, capsys):
    from test_handin import course_lines, grade

    result = cleanse.cleanse(tiny_net, tiny_lab.valid, faces=4, steps=3)
    result.flagged = np.array([0])  # unlearn class 0's recovered trigger, flagged or not
    tuned = cleanse.unlearn(tiny_net, tiny_lab.valid, result, steps=4)
    path, record = cleanse.save_unlearned(tuned, result, tmp_path / "unlearned.h5")
    assert record.name == "unlearned.json"
    [(printed, _, _)] = grade(tmp_path, [(tiny_lab.test.path, tiny_lab.bd_test.path, path)])
    assert printed == course_lines(capsys, ["eval", tiny_lab.test.path, tiny_lab.bd_test.path, path])


def test_the_commands_of_docs_defenses_run(demo_lab, tmp_path, monkeypatch, capsys):
    """Each command in docs/defenses.md, run as written in a copy of the demo lab, with fewer
    blends, steps and classes searched (the module constants the defaults come from)."""
    import re
    import shlex
    import shutil

    from conftest import ROOT
    from labkit import bench, cli

    text = (ROOT / "docs" / "defenses.md").read_text()
    commands = [shlex.split(line) for block in re.findall(r"```\n(.*?)```", text, re.S)
                for line in block.splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["labkit", "strip"], ["labkit", "cleanse"], ["labkit", "bench"]]
    shutil.copytree(demo_lab.data_dir, tmp_path / "data" / "demo")  # a copy: labkit follows no link out
    shutil.copytree(demo_lab.badnet_path.parent, tmp_path / "models" / "demo",
                    ignore=shutil.ignore_patterns("repaired"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(strip, "BLENDS", 4)
    for name, value in (("STEPS", 5), ("FACES", 4), ("COARSE_STEPS", 1), ("SHORTLIST", 10),
                        ("CLASSES_AT_ONCE", 2000)):  # one screening batch: one trace
        monkeypatch.setattr(cleanse, name, value)
    monkeypatch.setattr(bench, "_notebook_seconds", lambda: {"wall_s": None})
    for command in commands:
        assert cli.main(command[1:]) == 0, command
    out = capsys.readouterr().out
    assert "detections (sunglasses test faces flagged)" in out or "detections (bd_test" in out
    assert (tmp_path / "models" / "demo" / "repaired" / "neural_cleanse.json").is_file()
    assert '"neural_cleanse_real_size"' in out and '"classes": 1283' in out
