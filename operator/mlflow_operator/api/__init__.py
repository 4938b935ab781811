"""The v1alpha1 API: typed models for each kind, the single source of the CRD schemas."""

from mlflow_operator.api.kinds import GROUP, KINDS, VERSION, KindInfo, kind_info

__all__ = ["GROUP", "KINDS", "VERSION", "KindInfo", "kind_info"]
