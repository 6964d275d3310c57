"""bench.cpu_threads: its span arithmetic, and a seconds-long run through the real gateway."""

import argparse
import json

import pytest

from bench import cpu_threads

from ..service.conftest import MODEL_NAME


def test_spans_parse_and_count_their_settling_time():
    assert cpu_threads.parse_span("20+3.5") == (20.0, 3.5)
    for bad in ("20", "x+3", "-1+3", "5+0"):
        with pytest.raises(argparse.ArgumentTypeError, match="START"):
            cpu_threads.parse_span(bad)
    spans = [(10.0, 2.0), (30.0, 1.0)]
    assert [cpu_threads.in_spans(t, spans, settle_s=3.0) for t in (9.9, 10.0, 14.9, 15.0, 33.9)] \
        == [False, True, True, False, True]


@pytest.mark.slow
def test_runs_the_local_backend_with_a_neighbour(model_repository, tmp_path):
    out = tmp_path / "t.json"
    args = cpu_threads.get_args_parser().parse_args([
        "--backends", "local", "--threads", "1", "--model-name", MODEL_NAME,
        "--model-repository", str(model_repository), "--capacity-s", "2", "--seconds", "4",
        "--load", "0.3", "--hog-spans", "1+1", "--hogs", "1", "--settle-s", "1",
        "--deadline-s", "5", "--json", str(out)])
    result = cpu_threads.main(args)
    (row,) = json.loads(out.read_text())["rows"]
    assert row == result["rows"][0]
    assert (row["backend"], row["threads"]) == ("local", 1) and row["capacity"] > 0
    # Requests before, during and after the span: each part counted once.
    assert row["quiet"]["requests"] > 0 and row["noisy"]["requests"] > 0
    assert row["quiet"]["requests"] + row["noisy"]["requests"] == row["requests"]
    assert row["statuses"] == {"200": row["requests"]}  # 30 % of capacity, a 5 s deadline
