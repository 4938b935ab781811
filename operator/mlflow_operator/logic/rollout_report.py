"""What a ModelDeployment's rollout reports: the Available and Progressing conditions and status.message,
from the state a pass of the state machine (logic.rollout) left and what it waits for."""

from __future__ import annotations

from mlflow_operator.api.modeldeployment import MAX_MESSAGE, ModelDeploymentSpec, ModelDeploymentStatus, canary_steps
from mlflow_operator.logic.conditions import ConditionUpdate
from mlflow_operator.logic.rollout_analysis import current_analysis_step

# Conditions this module reports (the handler adds ModelResolved and summarizes Ready).
AVAILABLE = "Available"
PROGRESSING = "Progressing"

# Available reasons.
REASON_STABLE_AVAILABLE = "StableAvailable"
REASON_NO_READY_REPLICAS = "NoReadyReplicas"
REASON_DEPLOYING = "Deploying"
REASON_DEPLOY_FAILED = "DeployFailed"
REASON_WAITING_FOR_MODEL = "WaitingForModel"
# Progressing reasons.
REASON_ROLLING_OUT = "RollingOut"
REASON_PAUSED = "Paused"
REASON_INCONCLUSIVE = "Inconclusive"
REASON_ROLLOUT_COMPLETE = "RolloutComplete"
REASON_ROLLED_BACK = "RolledBack"


def available_condition(
    state: ModelDeploymentStatus, stable_pods: int, stable_problem: str, waiting: str
) -> ConditionUpdate:
    """Whether the stable version serves: `stable_pods` of its pods are ready, `stable_problem` says why not."""
    if state.stable_version is None:
        if state.canary_version is None:
            return ConditionUpdate(AVAILABLE, "Unknown", REASON_WAITING_FOR_MODEL, "no model version resolved yet")
        if state.phase == "Degraded":
            return ConditionUpdate(AVAILABLE, "False", REASON_DEPLOY_FAILED, waiting)
        return ConditionUpdate(AVAILABLE, "Unknown", REASON_DEPLOYING, f"deploying version {state.canary_version}")
    if stable_pods == 0:
        detail = f" ({stable_problem})" if stable_problem else ""
        return ConditionUpdate(
            AVAILABLE,
            "False",
            REASON_NO_READY_REPLICAS,
            f"stable version {state.stable_version} has no ready pods{detail}",
        )
    return ConditionUpdate(
        AVAILABLE,
        "True",
        REASON_STABLE_AVAILABLE,
        f"version {state.stable_version} serves ({stable_pods} ready pod(s))",
    )


def progressing_condition(spec: ModelDeploymentSpec, state: ModelDeploymentStatus, waiting: str) -> ConditionUpdate:
    """Where the rollout is; `waiting` says what a running one waits for."""
    if state.canary_version is not None:
        if state.phase == "Paused":
            inconclusive = (
                state.analysis_run is not None
                and spec.analysis is not None
                and (state.analysis_run.inconclusive > spec.analysis.inconclusive_limit)
            )
            # An analysis step without spec.analysis (the CRD refuses it) cannot pass either.
            unmeasurable = spec.analysis is None and current_analysis_step(spec, state) is not None
            if inconclusive or unmeasurable:
                return ConditionUpdate(PROGRESSING, "False", REASON_INCONCLUSIVE, waiting)
            # A planned pause is not a failure: Unknown, so no Warning Event and Ready says why.
            return ConditionUpdate(PROGRESSING, "Unknown", REASON_PAUSED, waiting)
        return ConditionUpdate(PROGRESSING, "True", REASON_ROLLING_OUT, progress_message(spec, state, waiting))
    if state.stable_version is None:
        return ConditionUpdate(PROGRESSING, "Unknown", REASON_WAITING_FOR_MODEL, "no model version resolved yet")
    if state.rolled_back_version is not None:
        last = next((r for r in reversed(state.history or ()) if r.version == state.rolled_back_version), None)
        why = last.message if last is not None and last.message else f"version {state.rolled_back_version} rolled back"
        return ConditionUpdate(PROGRESSING, "True", REASON_ROLLED_BACK, why)
    return ConditionUpdate(
        PROGRESSING, "True", REASON_ROLLOUT_COMPLETE, f"version {state.stable_version} is rolled out"
    )


def progress_message(spec: ModelDeploymentSpec, state: ModelDeploymentStatus, waiting: str) -> str:
    steps = canary_steps(spec)
    if state.current_step is None:
        return f"version {state.canary_version}: {waiting}"
    position = f"step {min(state.current_step + 1, len(steps))}/{len(steps)}"
    if state.current_step >= len(steps):
        position = "promoting"
    return f"version {state.canary_version}, {position}, weight {state.canary_weight or 0}%: {waiting}"


def status_message(state: ModelDeploymentStatus, available: ConditionUpdate, progressing: ConditionUpdate) -> str:
    """status.message: a running rollout's progress, else what keeps the stable from serving, else how the
    last rollout ended."""
    if state.canary_version is not None:
        return progressing.message[:MAX_MESSAGE]
    if available.status != "True":
        return available.message[:MAX_MESSAGE]
    return progressing.message[:MAX_MESSAGE]
