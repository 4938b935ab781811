"""The benchmarks' frame (bench.harness): the shared flags, where results go, Benchmark.main's result layout
and --rerender, finish, the summaries of samples, the sampler and the CPU parts."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from bench import harness
from bench.common import RESULTS_DIR, Cluster, Operator
from bench.harness import (
    Benchmark,
    Sampler,
    cpu_parts,
    distribution,
    queue_summary,
    results_path,
    run_parser,
    shared_parameters,
    usage_summary,
)

from tests.integration import dataplane as dp


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return run_parser("a benchmark", "demo", "a smoke run").parse_args(argv)


def evaluate(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"target": "ran", "met": "error" not in result, "detail": "-"}]


def markdown(result: Mapping[str, Any]) -> str:
    return f"# demo ({result['targets'][0]['met']})\n"


def demo(**changes: Any) -> Benchmark:
    benchmark = Benchmark(
        "demo", parse_args, lambda args: {"models": 3}, lambda run: None, evaluate, markdown, ["a note"],
        lambda message: None,
    )  # fmt: skip
    return dataclasses.replace(benchmark, **changes)


def test_results_path() -> None:
    assert results_path("scale", False) == RESULTS_DIR / "scale.json"
    assert results_path("scale", True) == RESULTS_DIR / "scale-quick.json"


def test_run_parser_has_the_shared_flags() -> None:
    args = parse_args([])
    assert (args.quick, args.resync_seconds, args.timeout, args.output, args.rerender) == (False, 60.0, 2400.0, None,
                                                                                           None)  # fmt: skip
    own = run_parser(None, "registry", "short", timeout=10.0, resync_seconds=None)
    own.add_argument("--resync-seconds", type=float, default=10.0)  # the benchmark's own meaning
    found = own.parse_args(["--quick", "--output", "x.json", "--rerender", "r.json"])
    assert (found.quick, found.timeout, found.output, found.rerender) == (True, 10.0, Path("x.json"), Path("r.json"))
    assert "bench/results/registry[-quick].json" in own.format_help()
    # The JSON records them: --resync-seconds whatever its meaning, and only where the benchmark takes it.
    assert shared_parameters(parse_args(["--quick", "--resync-seconds", "5"])) == {"quick": True, "resync_seconds": 5.0}
    assert shared_parameters(found) == {"quick": True, "resync_seconds": 10.0}
    without_resync = run_parser(None, "database_backup", "short", resync_seconds=None).parse_args([])
    assert shared_parameters(without_resync) == {"quick": False}


@pytest.mark.parametrize("markdown_file", [True, False])
def test_finish_evaluates_and_writes_the_markdown_next_to_the_json(tmp_path: Path, markdown_file: bool) -> None:
    document: dict[str, Any] = {}
    output = tmp_path / "new" / "demo.json"
    text = demo(markdown_file=markdown_file).finish(document, output)
    assert document["targets"][0]["met"] is True and text == "# demo (True)\n"
    assert output.with_suffix(".md").exists() is markdown_file
    if markdown_file:
        assert output.with_suffix(".md").read_text() == text


def test_main_lays_out_the_result_and_runs_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def execute(args: argparse.Namespace, logs: Path, result: dict[str, Any], *rest: Any) -> int:
        seen.update(args=args, logs=logs, result=result, output=rest[2])
        return 7

    def header(name: str, stamp: datetime.datetime, argv: Sequence[str] | None, parameters: dict[str, Any]) -> Any:
        return {"benchmark": name, "parameters": parameters}

    monkeypatch.setattr(dp, "server_venv", lambda: tmp_path)
    monkeypatch.setattr(harness, "logs_dir", lambda name: (datetime.datetime.now(datetime.UTC), tmp_path / name))
    monkeypatch.setattr(harness, "result_header", header)
    monkeypatch.setattr(harness, "execute", execute)
    sections: dict[str, Any] = {"phases": {}}
    assert demo(sections=sections, logs_name="demo-logs").main(["--quick"]) == 7
    result = seen["result"]
    assert list(result) == ["benchmark", "parameters", "operator", "phases", "logs", "notes"]
    # The shared flags first (the harness records them), then the scenario's own.
    assert list(result["parameters"].items()) == [("quick", True), ("resync_seconds", 60.0), ("models", 3)]
    assert result["logs"] == str(tmp_path / "demo-logs")
    assert result["notes"] == ["a note"] and seen["output"] == RESULTS_DIR / "demo-quick.json"
    result["phases"]["x"] = 1
    assert sections == {"phases": {}}  # every run starts from its own copy


def test_main_rerenders_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"error": "RuntimeError: x"}))
    out = tmp_path / "stdout"
    with out.open("w") as stream:
        assert demo().main(["--rerender", str(path)], stream) == 0
    assert json.loads(path.read_text())["targets"][0]["met"] is False
    assert path.with_suffix(".md").read_text() == "# demo (False)\n" and out.read_text() == "# demo (False)\n\n"


def test_distribution() -> None:
    assert distribution([3.0, None, 1.0, 2.0]) == {"count": 3, "min": 1.0, "p50": 2.0, "p90": 2.8, "max": 3.0,
                                                   "mean": 2.0}  # fmt: skip
    assert distribution([]) == {"count": 0, "min": None, "p50": None, "p90": None, "max": None, "mean": None}


def test_usage_summary() -> None:
    samples = [(0.0, 1.0, 100.0), (0.5, 1.25, 120.0), (1.0, 1.25, None), (2.0, 2.0, 110.0)]
    found = usage_summary(samples)
    assert found["cpu_s"] == 1.0 and found["cpu_mean_cores"] == 0.5
    assert found["cpu_peak_cores"] == 0.75
    assert (found["rss_start_mib"], found["rss_peak_mib"], found["rss_end_mib"]) == (100.0, 120.0, 110.0)
    assert usage_summary([])["cpu_mean_cores"] is None


def test_queue_summary() -> None:
    samples = [(0.0, 10, 4, 100), (1.0, 30, 4, 106), (2.0, 20, 2, 112)]
    assert queue_summary(samples) == {"depth_mean": 20.0, "depth_max": 30, "depth_end": 20, "running_mean": 10 / 3,
                                      "per_s": 6.0}  # fmt: skip
    assert queue_summary([])["per_s"] is None and queue_summary([(1.0, 0, 0, 5)])["per_s"] is None


class FakeOperator:
    """What the sampler and the CPU parts read of an Operator."""

    def __init__(self) -> None:
        self.scrapes = 0

    def cpu_seconds(self) -> float | None:
        return 1.5

    def memory_mib(self, key: str = "VmRSS") -> float | None:
        return 80.0

    def queue(self, operator: Operator) -> tuple[int, int, int]:
        self.scrapes += 1
        if self.scrapes == 1:
            raise OSError("not serving yet")  # a failed scrape skips one moment, the sampling goes on
        return 3, 1, 10 * self.scrapes


def test_sampler_reads_the_operator_until_the_block_ends() -> None:
    fake = FakeOperator()
    with Sampler(cast(Operator, fake), 0.01, fake.queue) as sampler:
        deadline = time.monotonic() + 5
        while len(sampler.queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(sampler.samples)
    assert count >= 3 and all(s[1:] == (1.5, 80.0) for s in sampler.samples)
    assert len(sampler.queue) == fake.scrapes - 1 and sampler.queue[0][1:] == (3, 1, 20)
    assert sampler.summary()["usage"]["rss_peak_mib"] == 80.0
    time.sleep(0.05)
    assert len(sampler.samples) == count  # the thread stopped with the block


def test_cpu_parts_names_what_runs(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"pids": {"etcd": 999_999_999}}))
    server = cast(dp.MlflowServer, argparse.Namespace(process=None))  # not started: no session to read
    fake = cast(Operator, FakeOperator())
    local = Cluster("k", "hack/localcluster.py", tmp_path)
    parts = cpu_parts(local, fake, server, {"prometheus": 999_999_998, "moto s3": None})
    assert list(parts) == ["operator", "benchmark driver and kubectl", "prometheus", "control plane"]
    assert parts["operator"]() == 1.5 and parts["prometheus"]() == 0.0 and parts["control plane"]() == 0.0
    assert list(cpu_parts(Cluster("k", "$KUBECONFIG"), None, server, {})) == ["benchmark driver and kubectl"]
