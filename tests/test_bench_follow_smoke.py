"""Smoke test of the follow benchmark (bench/follow.py): a tiny steady rate, SQLite; timings never asserted."""

from __future__ import annotations

from bench import follow as follow_bench


def test_follow_bench_reports_throughput_and_lag(tmp_path) -> None:
    result = follow_bench.measure(f"sqlite:///{tmp_path}/f.db", rate=200, seconds=1.0, base=300)
    assert result["caught_up"] and result["appended"] == 200
    assert result["applied_per_second"] > 0
    assert result["batches_unseen"] == 0
    assert 0 <= result["lag_p50_s"] <= result["lag_max_s"]
