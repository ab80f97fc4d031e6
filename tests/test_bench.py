"""`labkit bench --small`: the JSON it writes, the ceiling it measures and the agreement of fast and
naive predictions on face-like data."""
import json

from labkit import bench, cli


def test_bench_small_writes_json_with_agreement(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "LAB_SIZES", {"valid": 600, "bd_valid": 600, "test": 500,
                                             "bd_test": 500})
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--small", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert result["small"] and result["images"] == {"valid": 60, "bd_valid": 60, "test": 50,
                                                    "bd_test": 50}
    assert result["data"].startswith("stand-in")
    assert result["steps"] == 60 and result["fast_sweep"]["exact_masking"]
    assert 220 <= result["fast_sweep"]["head_images"] <= 220 * 61
    assert {"test_accuracy", "goodnet_flagged_poisoned"} <= set(result["fast_sweep"]["columns"])
    naive = result["naive_loop"]
    assert len(naive["steps_timed"]) >= 5 and naive["seconds_per_step"] > 0
    assert naive["seconds_all_steps_extrapolated"] >= naive["seconds_per_step"]
    assert "EXTRAPOLATED" in naive["what"]
    ceiling = result["ceiling"]
    assert ceiling["matmul_gflops"] > 0 and ceiling["convolutions_images_per_second"] > 0
    assert result["times_the_ceiling"] > 0 and result["speedup_over_naive"] > 0
    assert result["peak_memory_mb"]["after_fast_sweep"] > 0
    assert "ru_maxrss" in result["peak_memory_mb"]["how"]
    assert result["agreement"] is True and result["mismatches"] == 0
    assert result["predictions_compared"] == 220 * len(naive["steps_timed"])


def test_head_flops_counts_the_layers_after_pool_3():
    from labkit.models import Net, build_badnet

    per_image = 1200 * 160 + 4 * 3 * 240 * 80 + 960 * 160 + 160 * 1283  # multiply-adds
    assert bench.head_flops(Net(build_badnet(1283))) == 2 * per_image


def test_standin_network_predicts_the_demo_badnets_classes_with_the_labs_outputs(tiny_net):
    from labkit.faces import draw_faces, identities
    from labkit.standin import widen

    import numpy as np

    x = draw_faces(identities(10), np.arange(10), np.random.default_rng(0))
    wide = widen(tiny_net)
    assert wide.num_classes == 1283 and wide.scale == tiny_net.scale
    assert (wide.predict(x) == tiny_net.predict(x)).all()
