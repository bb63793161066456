{{/* Chart name, overridable. */}}
{{- define "modelship.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name "<release>-<chart>", or just the release name when it already contains
the chart name; 63 characters max (DNS label).
*/}}
{{- define "modelship.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelship.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change for the life of a release: used in selectors. */}}
{{- define "modelship.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelship.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelship.labels" -}}
helm.sh/chart: {{ include "modelship.chart" . }}
{{ include "modelship.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelship
{{- end }}

{{- define "modelship.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelship.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The leader election Lease: one per release, in the release namespace. */}}
{{- define "modelship.leaseName" -}}
{{- include "modelship.fullname" . }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "modelship.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the operator watches every namespace. */}}
{{- define "modelship.clusterwide" -}}
{{- if not .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/*
Cross-value checks the JSON schema cannot express; rendered (as nothing) by the
Deployment so every install/upgrade/template runs them.
*/}}
{{- define "modelship.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without leader election every replica would act on every ModelDeployment" }}
{{- end }}
{{- with .Values.leaderElection }}
{{- if and .enabled (not (and (gt (int .leaseDuration) (int .renewDeadline)) (gt (mulf (int .renewDeadline) 1.0) (mulf (int .retryPeriod) 1.2)))) }}
{{- fail "leaderElection needs leaseDuration > renewDeadline > 1.2 x retryPeriod (client-go's rule)" }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicas)) (gt (int .Values.replicas) 1) }}
{{- fail "podDisruptionBudget.minAvailable must be below replicas, or a node drain can never evict an operator pod" }}
{{- end }}
{{- if eq (int .Values.healthPort) (int .Values.metrics.port) }}
{{- fail "healthPort and metrics.port must differ" }}
{{- end }}
{{- end }}
