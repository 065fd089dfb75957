{{- define "capstan.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "capstan.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "capstan.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "capstan.serviceAccountName" -}}
{{- default (include "capstan.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* An image reference: (include "capstan.image" (list $ .Values.images.recorder)) */}}
{{- define "capstan.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "capstan.workerImage" -}}
{{- default (include "capstan.image" (list . .Values.images.recorder)) .Values.workerImage -}}
{{- end -}}

{{- /*
What the operator does inside a namespace it serves: a ClusterRole's rules when it watches every
namespace, a Role's in each watched namespace otherwise. Each verb is one the operator uses.
*/}}
{{- define "capstan.namespacedRules" }}
  # Capstan's kinds: kopf watches them and patches finalizers and annotations; the operator reads a
  # fresh copy before finishing. The per-task Roles grant a subset (get/list/watch one object,
  # patch its status): RBAC lets the operator grant only what it holds.
  - apiGroups: [capstan.dev]
    resources: [cloudrecordings, webrecordings, streampushes]
    verbs: [get, list, watch, patch]
  - apiGroups: [capstan.dev]
    resources: [cloudrecordings/status, webrecordings/status, streampushes/status]
    verbs: [patch]
  # Children carry ownerReferences with blockOwnerDeletion; where the OwnerReferencesPermission-
  # Enforcement admission plugin runs, that needs update on the owner's finalizers.
  - apiGroups: [capstan.dev]
    resources: [cloudrecordings/finalizers, webrecordings/finalizers, streampushes/finalizers]
    verbs: [update]
  # Worker Pods, one per attempt: watched (their state drives failover and finish), listed at clean-up.
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, delete]
  # The task's spool (one PVC every attempt mounts), created before the first Pod, deleted with the task.
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [create, delete]
  # The worker's own identity: ServiceAccount, and a Role + RoleBinding naming its one object.
  - apiGroups: [""]
    resources: [serviceaccounts]
    verbs: [create, delete]
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [roles, rolebindings]
    verbs: [create, delete]
  # Secrets: the ones a task names are read by name (and used only when labelled
  # capstan.dev/use: "true"); the per-task token Secret is created, renewed per attempt, deleted.
  # No list or watch: the operator never sees Secrets it was not pointed at.
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, create, update, delete]
  # Kubernetes Events about tasks (kopf posts core/v1 Events).
  - apiGroups: [""]
    resources: [events]
    verbs: [create]
{{- end }}
