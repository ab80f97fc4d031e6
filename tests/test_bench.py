"""`labkit bench --small`: the JSON it writes and the agreement of fast and naive predictions."""
import json

from labkit import bench, cli


def test_bench_small_writes_json_with_agreement(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "LAB_SIZES", {"valid": 600, "test": 500, "bd_test": 500})
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--small", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert result["small"] and result["images"] == {"valid": 60, "test": 50, "bd_test": 50}
    assert result["steps"] == 60 and result["fast_sweep"]["exact_masking"]
    assert {"test_accuracy", "goodnet_flagged_poisoned"} <= set(result["fast_sweep"]["columns"])
    naive = result["naive_loop"]
    assert len(naive["steps_timed"]) >= 5 and naive["seconds_per_step"] > 0
    assert naive["seconds_all_steps_estimated"] >= naive["seconds_per_step"]
    assert result["speedup"] > 0 and result["peak_memory_mb"]["after_fast_sweep"] > 0
    assert "ru_maxrss" in result["peak_memory_mb"]["how"]
    assert result["agreement"] is True and result["mismatches"] == 0
    assert result["predictions_compared"] == 160 * len(naive["steps_timed"])
