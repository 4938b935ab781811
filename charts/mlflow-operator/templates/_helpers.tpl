{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "mlflow-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mlflow-operator.serviceAccountName" -}}
{{- default (include "mlflow-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mlflow-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mlflow-operator.labels" -}}
{{ include "mlflow-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mlflow-operator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/*
RBAC: exactly what the operator uses, no wildcards. manifests/rbac.yaml carries the same rules (a test
renders this chart and compares them). Cluster-scoped: what kopf needs to discover our CRDs and the
namespaces it serves.
*/}}
{{- define "mlflow-operator.clusterRules" -}}
# kopf discovers resources and namespaces (for --all-namespaces and namespace globs).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
# Whether the parent Gateways' class can mirror (status.supportedFeatures), before a ModelDeployment's
# HTTPRoute asks it to. Gateways usually live in another namespace than the routes.
- apiGroups: [gateway.networking.k8s.io]
  resources: [gateways, gatewayclasses]
  verbs: [get]
{{- end -}}

{{/* Namespaced: our kinds and the children the reconcilers write (server-side apply: create + patch). */}}
{{- define "mlflow-operator.namespacedRules" -}}
# Our kinds: watched, annotated by kopf (progress, diff base), finalized, and their status written.
- apiGroups: [mlflow.operator.dev]
  resources: [trackingservers, registeredmodels, modeldeployments]
  verbs: [get, list, watch, patch, update]
- apiGroups: [mlflow.operator.dev]
  resources: [trackingservers/status, registeredmodels/status, modeldeployments/status]
  verbs: [get, patch, update]
# Events on our resources.
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Secrets: credentials are read; generated ones are created once and never updated by anyone but the operator.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [configmaps, serviceaccounts, services]
  verbs: [get, create, patch]
# delete: a ModelDeployment removes the Deployments of versions it no longer serves.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch]
# get: a database volume older than its TrackingServer (retained) may take its backup location back.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
# delete: a failed migration Job is retried.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# delete: the gc CronJob goes when spec.retention is removed.
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies, ingresses]
  verbs: [get, create, patch]
# The HTTPRoute a ModelDeployment splits traffic with (gatewayAPI routing).
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, create, patch, delete]
{{- end -}}
