import json
import math

from bench import synthetic_render


def test_synthetic_render_bench_runs(tmp_path, capsys):
    out = tmp_path / "render.json"
    args = synthetic_render.get_args_parser().parse_args(
        ["--warmup", "0", "--iters", "1", "--json", str(out)])
    synthetic_render.main(args)
    rows = json.loads(out.read_text())["rows"]
    assert [r["split"] for r in rows] == ["train", "test"]
    for r in rows:
        assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0
    assert "| train |" in capsys.readouterr().out
