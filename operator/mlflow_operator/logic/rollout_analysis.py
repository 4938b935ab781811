"""Canary analysis: one measurement of spec.analysis's metrics judged against their ranges.

A metric fails when its value is outside its range, and is inconclusive when the value is missing, NaN, an
error, or the sample size is below `minSampleSize`: inconclusive never passes. A failed metric fails the
measurement; otherwise an inconclusive one makes it inconclusive. How many measurements a step takes and
what the rollout does with their outcomes is the state machine's (logic.rollout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mlflow_operator.api.modeldeployment import (
    MAX_MESSAGE,
    Analysis,
    AnalysisMetric,
    AnalysisResult,
    AnalysisRun,
    CanaryStep,
    MeasurementOutcome,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    canary_steps,
)
from mlflow_operator.logic.conditions import rfc3339

MAX_VALUE = 64  # status.analysisResults[].value


@dataclass(frozen=True)
class Sample:
    """One Prometheus instant query's answer: a value, or no value (no data) and maybe an error."""

    metric: str
    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Measurement:
    """Every metric of spec.analysis measured once, plus the sample-size query when there is one."""

    samples: tuple[Sample, ...] = ()
    sample_size: Sample | None = None


def _format_value(value: float) -> str:
    return f"{value:.6g}"[:MAX_VALUE]


def _in_range(low: float | None, high: float | None, value: float) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"[{low:g}, {high:g}]"
    return f">= {low:g}" if low is not None else f"<= {high:g}"


def _sample_problem(sample: Sample | None) -> str | None:
    """Why a sample cannot be judged: missing, an error, no data or NaN (never a pass)."""
    if sample is None:
        return "not measured"
    if sample.error:
        return f"query failed: {sample.error}"[:MAX_MESSAGE]
    if sample.value is None:
        return "no data"
    if math.isnan(sample.value):
        return "NaN"
    return None


def _sample_size_problem(analysis: Analysis, measurement: Measurement) -> str | None:
    if analysis.sample_size_query is None or analysis.min_sample_size is None:
        return None
    problem = _sample_problem(measurement.sample_size)
    if problem is not None:
        return f"sample size unknown ({problem})"
    size = measurement.sample_size.value if measurement.sample_size else None
    if size is not None and size < analysis.min_sample_size:
        return f"sample size {_format_value(size)} is below minSampleSize {analysis.min_sample_size}"
    return None


def _verdict(metric: AnalysisMetric, sample: Sample | None, too_small: str | None) -> tuple[MeasurementOutcome, str]:
    problem = _sample_problem(sample) or too_small
    if problem is not None:
        return "Inconclusive", problem
    bounds = metric.threshold_range
    if sample is not None and sample.value is not None and _in_range(bounds.min, bounds.max, sample.value):
        return "Passed", f"within {_range_text(bounds.min, bounds.max)}"
    return "Failed", f"outside {_range_text(bounds.min, bounds.max)}"


def evaluate(analysis: Analysis, measurement: Measurement, now: datetime) -> list[AnalysisResult]:
    """Judge one measurement, metric by metric."""
    time = rfc3339(now)
    samples = {sample.metric: sample for sample in measurement.samples}
    too_small = _sample_size_problem(analysis, measurement)
    results = []
    for metric in analysis.metrics:
        sample = samples.get(metric.name)
        value = _format_value(sample.value) if sample is not None and sample.value is not None else None
        outcome, message = _verdict(metric, sample, too_small)
        results.append(AnalysisResult(metric=metric.name, value=value, outcome=outcome, message=message, time=time))
    return results


def measurement_outcome(results: Sequence[AnalysisResult]) -> MeasurementOutcome:
    """A failed metric fails the measurement; otherwise any inconclusive metric makes it inconclusive."""
    outcomes = {result.outcome for result in results}
    if "Failed" in outcomes:
        return "Failed"
    if "Inconclusive" in outcomes or not results:
        return "Inconclusive"
    return "Passed"


def conclusive(analysis_run: AnalysisRun) -> int:
    """The measurements that count towards the step's count: inconclusive ones never do."""
    return analysis_run.passed + analysis_run.failed


def analysis_count(spec: ModelDeploymentSpec, step: CanaryStep) -> int:
    if step.analysis is not None and step.analysis.count is not None:
        return step.analysis.count
    return spec.analysis.count if spec.analysis else 1


def current_analysis_step(spec: ModelDeploymentSpec, state: ModelDeploymentStatus) -> CanaryStep | None:
    steps = canary_steps(spec)
    index = state.current_step
    if state.canary_version is None or index is None or index >= len(steps):
        return None
    return steps[index] if steps[index].analysis is not None else None


def describe_results(results: Sequence[AnalysisResult]) -> str:
    """The results as Events and messages show them: metric=value (why), ..."""
    return ", ".join(f"{r.metric}={r.value if r.value is not None else '-'} ({r.message})" for r in results)
