"""GoodNet: agree -> B's class, disagree -> N; metrics; `labkit goodnet` (saving: test_handin)."""
import numpy as np
import pytest
from PIL import Image

import labkit
from labkit import cli
from labkit.goodnet import GoodNet, load_goodnet, save_goodnet
from labkit.metrics import clean_accuracy, predict
from labkit.models import save_model
from labkit.prune import prune

from conftest import tiny_faces


@pytest.fixture(scope="module")
def faces():
    return tiny_faces(200, seed=5)[0]


@pytest.fixture(scope="module")
def repaired(tiny_net):
    return prune(tiny_net, np.arange(45))


def test_goodnet_outputs_the_agreed_class_or_n(tiny_net, repaired, faces):
    g = GoodNet(tiny_net, repaired)
    b, r, out = tiny_net.predict(faces), repaired.predict(faces), g.predict(faces)
    agree = b == r
    assert agree.any() and (~agree).any()  # both cases occur in these images
    np.testing.assert_array_equal(out[agree], b[agree])
    assert (out[~agree] == 10).all()
    assert g.num_classes == g.backdoor_class == 10 and out.min() >= 0 and out.max() <= 10


def test_goodnet_of_b_with_itself_flags_nothing(tiny_net, faces):
    g = GoodNet(tiny_net, tiny_net)
    np.testing.assert_array_equal(g.predict(faces), tiny_net.predict(faces))


def test_goodnet_works_with_metrics(tiny_net, repaired, tiny_lab):
    g = GoodNet(tiny_net, repaired)
    preds, labels = predict(g, tiny_lab.test)
    b = tiny_net.predict(tiny_lab.test.load()[0])
    flagged = preds == 10
    assert clean_accuracy(g, tiny_lab.test) == pytest.approx(
        100 * np.mean(~flagged & (b == labels)))


def test_goodnet_refuses_a_repaired_net_of_another_architecture(tiny_net):
    import keras

    with pytest.raises(labkit.LabError, match="11 classes but B"):
        GoodNet(tiny_net, labkit.Net(labkit.build_badnet(11)))
    def narrower(layer):  # conv_4 with 40 filters instead of 80
        config = layer.get_config()
        if layer.name == "conv_4":
            config["filters"] = 40
        return layer.__class__.from_config(config)

    other = labkit.Net(keras.models.clone_model(tiny_net.model, clone_function=narrower))
    assert other.num_classes == 10
    with pytest.raises(labkit.LabError, match="architecture"):
        GoodNet(tiny_net, other)


def test_load_goodnet_refuses_other_files(tiny_net, tmp_path):
    with pytest.raises(labkit.LabError, match="not a GoodNet"):
        load_goodnet(save_model(tiny_net, tmp_path / "model.keras"))
    (tmp_path / "x.keras").write_text("no")
    with pytest.raises(labkit.LabError, match="not a GoodNet"):
        load_goodnet(tmp_path / "x.keras")
    with pytest.raises(labkit.LabError, match=r"save a GoodNet as \.keras"):
        save_goodnet(GoodNet(tiny_net, tiny_net), tmp_path / "g.h5")


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_goodnet_on_lab_files(tiny_lab, tiny_net, repaired, tmp_path, capsys):
    rep = save_model(repaired, tmp_path / "repaired.h5")
    code, out, err = run_cli(["goodnet", tiny_lab.badnet_path, rep, tiny_lab.test.path,
                              tiny_lab.bd_test.path], capsys)
    assert code == 0, err
    g = GoodNet(tiny_net, repaired)
    lines = out.splitlines()
    for line, split in zip(lines, (tiny_lab.test, tiny_lab.bd_test)):
        preds, labels = predict(g, split)
        acc, flagged = 100 * np.mean(preds == labels), 100 * np.mean(preds == 10)
        assert line == (f"{split.path}: Classification accuracy: {acc:.2f} %; "
                        f"flagged as backdoored: {flagged:.2f} %")


def test_cli_goodnet_on_images(tiny_lab, tiny_net, repaired, faces, tmp_path, capsys):
    rep = save_model(repaired, tmp_path / "repaired.h5")
    pixels = faces[:12].round().astype(np.uint8)
    paths = []
    for i, face in enumerate(pixels):
        paths.append(tmp_path / f"face{i}.{'png' if i % 2 else 'jpg'}")
        Image.fromarray(face).save(paths[-1], quality=100)
    code, out, err = run_cli(["goodnet", tiny_lab.badnet_path, rep, *paths], capsys)
    assert code == 0, err
    read = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
    expected = GoodNet(tiny_net, repaired).predict(read)
    got = [int(line.split(": ")[1].split()[0]) for line in out.splitlines()]
    assert got == expected.tolist() and (expected == 10).any() and (expected < 10).any()
    assert all(line.endswith("(backdoored)") == (c == 10) for line, c in zip(out.splitlines(), got))


def test_cli_goodnet_errors(tiny_lab, tiny_net, tmp_path, capsys):
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(tmp_path / "big.png")
    code, _, err = run_cli(["goodnet", tiny_lab.badnet_path, tiny_lab.badnet_path,
                            tmp_path / "big.png"], capsys)
    assert code == 2 and "60x50" in err and "47x55" in err and len(err.splitlines()) == 1
    other = save_model(labkit.Net(labkit.build_badnet(11)), tmp_path / "other.h5")
    code, _, err = run_cli(["goodnet", tiny_lab.badnet_path, other, tiny_lab.test.path], capsys)
    assert code == 2 and "11 classes" in err
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(["goodnet", tiny_lab.badnet_path, tiny_lab.badnet_path,
                            tmp_path / "notes.txt"], capsys)
    assert code == 2 and "PNG/JPEG" in err
