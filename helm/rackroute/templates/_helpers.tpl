{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "rackroute.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* chart label: name-version */}}
{{- define "rackroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "rackroute.labels" -}}
helm.sh/chart: {{ include "rackroute.chart" . }}
app.kubernetes.io/name: {{ include "rackroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rackroute
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" . "component" "agent"). */}}
{{- define "rackroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rackroute.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image reference; the tag defaults to the chart's appVersion. */}}
{{- define "rackroute.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "rackroute.agentServiceAccount" -}}
{{- .Values.serviceAccount.agent.name -}}
{{- end -}}

{{- define "rackroute.operatorServiceAccount" -}}
{{- .Values.serviceAccount.operator.name -}}
{{- end -}}

{{/* Where the agents and the operator read the cluster: kubernetes (the API server, with
     the pods' service accounts) or manifests (a host directory). */}}
{{- define "rackroute.source" -}}
{{- if not (has .Values.source (list "kubernetes" "manifests")) -}}
{{- fail (printf "source must be kubernetes or manifests, got %q" .Values.source) -}}
{{- end -}}
{{- .Values.source -}}
{{- end -}}

{{/* The API server's own address for pods that cannot use the kubernetes Service's
     ClusterIP before the datapath serves it (the agent replaces kube-proxy). */}}
{{- define "rackroute.apiServerEnv" -}}
{{- if .Values.k8sServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.k8sServiceHost | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.k8sServicePort | quote }}
{{- end }}
{{- end -}}
