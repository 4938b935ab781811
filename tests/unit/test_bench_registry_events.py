"""The registry-events benchmark's pure helpers: the ModelDeployment it applies (which the operator accepts),
the webhook it registers (what the operator's receiver and docs expect), the alias moves' versions, the random
waits, the watch lines, the operator's counters, the phase summary, the target and the table."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from bench.registry_events import (
    BENCHMARK,
    MD_NAME,
    TARGET_S,
    WatchStream,
    apply_watch_event,
    condition_text,
    counters_delta,
    deployment_name,
    evaluate,
    event_counters,
    events_condition,
    markdown,
    model_deployment,
    move_targets,
    parse_args,
    random_waits,
    summary,
    watch_event,
    webhook_body,
    webhook_env,
)

from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.builders.modeldeployment import Names
from mlflow_operator.handlers.registry_events import new_encryption_key
from mlflow_operator.logic import registry_events as events

OPERATOR_METRICS = """\
# HELP mlflow_operator_registry_events_total Verified registry webhook deliveries by event type.
# TYPE mlflow_operator_registry_events_total counter
mlflow_operator_registry_events_total{type="model_version_alias.created"} 21.0
mlflow_operator_registry_events_total{type="model_version.created"} 1.0
mlflow_operator_registry_events_created{type="model_version.created"} 1.7e9
# TYPE mlflow_operator_registry_events_rejected_total counter
mlflow_operator_registry_events_rejected_total{reason="unknown_model"} 1.0
# TYPE mlflow_operator_registry_event_wakeups_total counter
mlflow_operator_registry_event_wakeups_total{kind="ModelDeployment"} 20.0
mlflow_operator_reconciles_total{kind="ModelDeployment",result="success"} 300.0
"""


def test_model_deployment_is_accepted_by_the_operator() -> None:
    body = model_deployment(MD_NAME, "m", "http://127.0.0.1:5000", 30, 30)
    spec = ModelDeploymentSpec.model_validate(body["spec"])
    assert spec.registry_events is not None and spec.registry_events.secret is not None
    assert spec.registry_events.secret.name == "hook" and spec.registry_events.secret.key == "secret"
    assert body["spec"]["pollInterval"] == "30s" and body["spec"]["registryEvents"]["pollInterval"] == "30s"
    assert spec.strategy is not None and spec.strategy.canary is not None
    assert [s.pause is not None for s in spec.strategy.canary.steps] == [False, True]
    # The operator takes events for it from the Secret the webhook URL names.
    source = events.source_of({**body, "metadata": {**body["metadata"], "namespace": "ns"}})
    assert source == events.Source("secrets", "ns", "hook")
    assert events.followed_model("ModelDeployment", body) == "m"


def test_webhook_body_matches_the_operator() -> None:
    body = webhook_body("http://127.0.0.1:1/registry-events/ns/secrets/hook", "s3cret")
    assert {(e["entity"], e["action"]) for e in body["events"]} == set(events.WEBHOOK_EVENTS)
    assert body["secret"] == "s3cret" and body["url"].endswith("/secrets/hook") and body["name"]


def test_deployment_name_is_the_builders() -> None:
    assert deployment_name("md", 3) == Names("md").deployment(3) == "md-v3"


def test_webhook_env() -> None:
    key = new_encryption_key()
    assert len(base64.urlsafe_b64decode(key)) == 32  # a Fernet key
    env = webhook_env(key)
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == key
    assert env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http"
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert env["MLFLOW_WEBHOOK_CACHE_TTL"] == "1"


def test_move_targets_alternate_and_skip_the_stable_and_running_versions() -> None:
    assert move_targets(5, (1, 2, 3), 1, None) == [2, 3, 2, 3, 2]
    assert move_targets(3, (1, 2, 3), 1, 2) == [3, 2, 3]
    assert move_targets(3, (1, 2, 3), 1, 3) == [2, 3, 2]
    assert move_targets(4, (1, 2, 3, 4), 2, 4) == [1, 3, 4, 1]
    assert move_targets(0, (1, 2, 3), 1, None) == []
    for count in range(1, 8):
        targets = move_targets(count, (1, 2, 3), 1, None)
        assert 1 not in targets
        assert all(a != b for a, b in itertools.pairwise(targets))
    # The polling phase continues from where the webhooks phase left its canary.
    both = move_targets(10, (1, 2, 3), 1, None)
    assert both[5:] == move_targets(5, (1, 2, 3), 1, both[4])
    with pytest.raises(ValueError, match="two versions"):
        move_targets(2, (1, 2), 1, None)


def test_random_waits_are_reproducible_and_within_the_poll() -> None:
    waits = random_waits(200, 30, seed=1)
    assert waits == random_waits(200, 30, seed=1) != random_waits(200, 30, seed=2)
    assert all(0 <= w < 30 for w in waits)
    assert min(waits) < 5 and max(waits) > 25  # spread over the cycle


def watch_output(*events: tuple[str, str], indent: int | None = None) -> str:
    """What `kubectl get deployments --watch --output-watch-events -o json` prints: one event per line."""
    return "".join(
        json.dumps({"type": kind, "object": {"kind": "Deployment", "metadata": {"name": name}}}, indent=indent) + "\n"
        for kind, name in events
    )


@pytest.mark.parametrize("indent", [None, 4])
def test_watch_stream(indent: int | None) -> None:
    stream = WatchStream()
    text = watch_output(
        ("ADDED", "md-v1"), ("BOOKMARK", "x"), ("MODIFIED", "md-v2"), ("DELETED", "md-v2"), indent=indent
    )
    found = [event for line in text.splitlines(keepends=True) if (event := stream.feed(line)) is not None]
    assert found == [("ADDED", "md-v1"), ("MODIFIED", "md-v2"), ("DELETED", "md-v2")]


def test_watch_stream_reads_on_after_a_broken_line() -> None:
    stream = WatchStream()
    assert stream.feed('{"type": "ADDED", "object": {"metadata"\n') is None
    assert stream.feed("}\n") is None
    assert stream.feed('{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n') == ("ADDED", "a")
    assert watch_event({"type": "ERROR", "object": {"kind": "Status", "message": "too old"}}) is None
    assert watch_event({"type": "ADDED", "object": {"metadata": {}}}) is None
    assert watch_event([]) is None


def test_watch_state() -> None:
    present: dict[str, float] = {}
    apply_watch_event(present, ("ADDED", "md-v2"), 1.0)
    apply_watch_event(present, ("MODIFIED", "md-v2"), 2.0)  # first seen stays
    apply_watch_event(present, ("MODIFIED", "md-v1"), 3.0)  # a restart's list starts with MODIFIED? still seen
    assert present == {"md-v2": 1.0, "md-v1": 3.0}
    apply_watch_event(present, ("DELETED", "md-v2"), 4.0)
    apply_watch_event(present, ("DELETED", "gone"), 4.0)
    apply_watch_event(present, ("ADDED", "md-v2"), 5.0)  # a new incarnation counts from its own ADDED
    assert present == {"md-v2": 5.0, "md-v1": 3.0}


def test_event_counters_and_deltas() -> None:
    counters = event_counters(OPERATOR_METRICS)
    assert counters == {
        "events": {"model_version_alias.created": 21.0, "model_version.created": 1.0},
        "rejected": {"unknown_model": 1.0},
        "wakeups": {"ModelDeployment": 20.0},
    }
    assert event_counters("") == {"events": {}, "rejected": {}, "wakeups": {}}
    before = {"events": {"model_version.created": 1.0}, "rejected": {"unknown_model": 1.0}, "wakeups": {}}
    delta = counters_delta(before, counters)
    assert delta["events"] == {"model_version_alias.created": 21.0}
    assert delta["events_total"] == 21.0
    assert delta["rejected"] == {} and delta["rejected_total"] == 0
    assert delta["wakeups"] == {"ModelDeployment": 20.0} and delta["wakeups_total"] == 20.0


def move(latency: float | None, wakeups: float = 1.0, rest: float = 0.02) -> dict[str, Any]:
    return {"latency_s": latency, "rest_s": rest, "counters": {"wakeups_total": wakeups}}


def test_summary() -> None:
    found = summary([move(1.0), move(3.0), move(2.0), move(10.0, wakeups=0), move(None, wakeups=0)])
    assert found["moves"] == 5 and found["measured"] == 4
    assert found["min"] == 1.0 and found["max"] == 10.0 and found["mean"] == 4.0
    assert found["p50"] == 2.5 and found["p90"] == pytest.approx(7.9)
    assert found["woken_by_event"] == 3
    assert found["rest_call_p50_s"] == 0.02
    empty = summary([])
    assert empty["measured"] == 0 and empty["p50"] is None and empty["max"] is None and empty["woken_by_event"] == 0


def result(webhook_latencies: list[float | None], polling: list[float | None], moves: int) -> dict[str, Any]:
    phases = {}
    for name, values in (("webhooks", webhook_latencies), ("polling", polling)):
        moved = [move(v, wakeups=1.0 if name == "webhooks" else 0.0) for v in values]
        if moved:
            phases[name] = {
                "moves": moved,
                "summary": summary(moved),
                "counters": {"events": {"model_version_alias.created": float(len(moved))}, "rejected": {}},
                "operator_cpu_s": 3.2,
                "condition_at_end": {"status": "True", "reason": "Receiving", "message": "events wake it"},
                "duration_s": 40.0,
            }
    return {
        "date": "2026-12-05T21:00:00+00:00",
        "parameters": {
            "moves": moves,
            "poll_interval_s": 30.0,
            "events_poll_interval_s": 30.0,
            "seed": 1,
            "targets_text": "v2, v3, v2, v3, ...",
            "quick": False,
        },
        "machine": {"cores": 2, "load_average_at_start": [1.0, 0.5, 0.2], "load_average_at_end": [1.5, 1.0, 0.5]},
        "phases": phases,
        "operator": {
            "registry_events_at_end": event_counters(OPERATOR_METRICS),
            "rss_start_mib": 90.0,
            "rss_peak_mib": 110.0,
            "rss_end_mib": 105.0,
            "log": {"errors": 0, "warnings": 1},
        },
        "webhook_test": {"result": "success True, HTTP 200"},
        "watch_restarts": 0,
        "duration_s": 812.3,
        "notes": ["a note"],
    }


def test_evaluate_met_missed_and_not_measured() -> None:
    met = evaluate(result([0.8, 1.2, 1.0], [14.0, 20.0, 3.0], 3))[0]
    assert met["met"] is True
    assert (
        "median 1.00 s" in met["detail"]
        and "3/3 moves" in met["detail"]
        and "polling only: median 14.0 s" in (met["detail"])
    )
    assert str(TARGET_S).rstrip("0").rstrip(".") in met["target"]
    slow = evaluate(result([3.5, 3.0, 4.0], [], 3))[0]
    assert slow["met"] is False and "median 3.50 s" in slow["detail"]  # 3 s exactly is not under 3 s
    assert evaluate(result([3.0, 3.0, 2.0], [], 3))[0]["met"] is False
    incomplete = evaluate(result([0.5, None, 0.5], [], 3))[0]
    assert incomplete["met"] is False and "2/3 moves" in incomplete["detail"]
    short = evaluate(result([0.5, 0.5], [], 3))[0]  # the run stopped after 2 of 3 moves
    assert short["met"] is False
    none = evaluate(result([], [], 3))[0]
    assert none["met"] is None and none["detail"] == "not measured"


def test_markdown_table(tmp_path: Path) -> None:
    document = result([0.8, 1.2, 1.0], [14.0, 20.0, 3.0], 3)
    output = tmp_path / "registry_events.json"
    text = BENCHMARK.finish(document, output)
    assert output.with_suffix(".md").read_text() == text == markdown(document)
    assert text.startswith("# Registry events benchmark (2026-12-05T21:00:00+00:00)")
    assert (
        "| **webhooks: alias moved -> canary Deployment exists**: median / p90 / max | 1.00 s / 1.16 s / 1.20 s |"
        in (text)
    )
    assert "| **polling only: alias moved -> canary Deployment exists**: median / p90 / max | 14.00 s / 18.80 s /" in (
        text
    )
    assert "| webhooks: moves measured; woken by a verified delivery | 3/3; 3 |" in text
    assert "| polling only: moves measured; woken by a verified delivery | 3/3; 0 |" in text
    assert "model_version.created 1, model_version_alias.created 21" in text
    assert "| registry_events_rejected_total | unknown_model 1 |" in text
    assert "| registry_event_wakeups_total | ModelDeployment 20 |" in text
    assert "| webhooks: the ModelDeployment's RegistryEvents condition after the phase | True Receiving: events" in text
    assert "30 s / 30 s" in text and "**met**" in text and "Note: a note" in text
    json.dumps(document)  # the targets go into the JSON too
    assert document["targets"][0]["met"] is True


def test_markdown_of_a_run_that_stopped_early() -> None:
    document = result([], [], 20)
    document["error"] = "RuntimeError: the first rollout not reached"
    del document["operator"]["registry_events_at_end"]
    document["targets"] = evaluate(document)
    text = markdown(document)
    assert "n/a / n/a / n/a" in text and "not measured" in text and "did not complete" in text
    assert "| **operator /metrics at the end**: registry_events_total | none |" in text


def test_parse_args_defaults() -> None:
    assert parse_args([]).moves == 20
    assert parse_args(["--quick"]).moves == 5
    assert parse_args(["--quick", "--moves", "7"]).moves == 7
    assert parse_args([]).poll_interval == 30.0
    with pytest.raises(SystemExit):
        parse_args(["--moves", "0"])


def test_events_condition() -> None:
    status = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Available"},
            {"type": "RegistryEvents", "status": "False", "reason": "NoDelivery", "message": "none yet", "x": 1},
        ]
    }
    found = events_condition(status)
    assert found == {"status": "False", "reason": "NoDelivery", "message": "none yet"}
    assert condition_text(found) == "False NoDelivery: none yet"
    assert events_condition({}) is None and condition_text(None) == "n/a"
