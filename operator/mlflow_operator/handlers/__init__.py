"""Thin kopf handlers: load the typed spec, compute, apply, write status and Events.

Importing this package registers every handler with kopf.
"""

from mlflow_operator.handlers import modeldeployment, operator_settings, registeredmodel, trackingserver

__all__ = ["modeldeployment", "operator_settings", "registeredmodel", "trackingserver"]
