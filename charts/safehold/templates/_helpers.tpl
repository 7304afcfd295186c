{{/* Chart name, overridable with .Values.nameOverride (63 chars: a DNS label). */}}
{{- define "safehold.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, suffixed with the chart name unless it already
contains it. Overridable with .Values.fullnameOverride.
*/}}
{{- define "safehold.fullname" -}}
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

{{/* chart label value: name-version */}}
{{- define "safehold.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "safehold.labels" -}}
helm.sh/chart: {{ include "safehold.chart" . }}
{{ include "safehold.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: safehold
{{- end }}

{{/* Labels selecting the operator's Pods (immutable once deployed: keep them few). */}}
{{- define "safehold.selectorLabels" -}}
app.kubernetes.io/name: {{ include "safehold.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "safehold.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "safehold.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "safehold.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The runner image reference; the tag defaults to the chart's appVersion. */}}
{{- define "safehold.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (default .Chart.AppVersion .Values.runner.image.tag) }}
{{- end }}

{{/*
What the operator may do in a namespace it serves — each rule names its caller.
controller/kube.py is the only module that talks to the API server; kopf itself watches the
handled kinds and patches their metadata (its annotations; the finalizer of a Backup with
deletionPolicy Delete). The operator writes status, never spec, and updates nothing whole.
*/}}
{{- define "safehold.operatorRules" -}}
# kopf: watch the four kinds, patch their metadata; kube.get_custom / list_custom /
# patch_custom (retention's deletionPolicy on the Backups it prunes, made by schedules).
- apiGroups: ["safehold.dev"]
  resources: ["backuptargets", "backupschedules", "backups", "restores"]
  verbs: ["get", "list", "watch", "patch"]
# kube.ensure_custom: Backups of schedules and of an adopted repository; kube.delete_custom:
# the Backups retention prunes (kube.patch_custom marks them deletionPolicy Delete first).
- apiGroups: ["safehold.dev"]
  resources: ["backups"]
  verbs: ["create", "delete"]
# kube.patch_status.
- apiGroups: ["safehold.dev"]
  resources: ["backuptargets/status", "backupschedules/status", "backups/status", "restores/status"]
  verbs: ["patch"]
# Jobs are created owned by their object with blockOwnerDeletion, which clusters running the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) allow only with this.
- apiGroups: ["safehold.dev"]
  resources: ["backuptargets/finalizers", "backups/finalizers", "restores/finalizers"]
  verbs: ["update"]
# kopf: watch the runner Jobs; kube.ensure_job / get_job / delete_job.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# kube.ensure_deployment / get_deployment / delete_deployment: the pointInTime log streamer
# of a BackupTarget (owned by it; a changed one is deleted, then created again).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "delete"]
# kube.job_pods: a Job's pods, for their termination message (the runner's result);
# kube.pods: a streamer's pod, whose IP the operator polls for the streamer's status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# kube.ensure_claim: the claim of a Restore's destination.volume.claimTemplate
# (create-if-absent, then read; never deleted: it holds the restored data).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create"]
# kube.ensure_service_account: the runner ServiceAccount (create-if-absent, then read).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create"]
# kube.ensure_secret: the key Secret of `generateKey: true` (created, never read back);
# kube.get_secret_value: a schedule's Slack webhook URL; kube.secret_version: a key Secret's
# resourceVersion (metadata only), which starts a re-wrap when the keys change. No list or
# watch: storage credentials and keys reach the Jobs by reference only.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# kube.event and kopf's own events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
