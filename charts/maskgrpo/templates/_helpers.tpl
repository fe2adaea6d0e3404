{{/* Name of the chart, overridable. */}}
{{- define "maskgrpo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-maskgrpo unless the release name already contains it. */}}
{{- define "maskgrpo.fullname" -}}
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

{{- define "maskgrpo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; pass a dict {ctx, component}. */}}
{{- define "maskgrpo.labels" -}}
helm.sh/chart: {{ include "maskgrpo.chart" .ctx }}
{{ include "maskgrpo.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: maskgrpo
{{- end }}

{{- define "maskgrpo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maskgrpo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "maskgrpo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "maskgrpo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "maskgrpo.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* Name of the Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. */}}
{{- define "maskgrpo.storeSecretName" -}}
{{- if .Values.store.devSecret.create }}
{{- printf "%s-store" (include "maskgrpo.fullname" .) }}
{{- else }}
{{- required "store.existingSecret is required (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or set store.devSecret.create=true for development" .Values.store.existingSecret }}
{{- end }}
{{- end }}

{{- define "maskgrpo.minioName" -}}
{{- printf "%s-minio" (include "maskgrpo.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The S3 endpoint: explicit, else the dev MinIO Service, else empty (AWS). */}}
{{- define "maskgrpo.storeEndpoint" -}}
{{- if .Values.store.endpoint }}
{{- .Values.store.endpoint }}
{{- else if .Values.minio.enabled }}
{{- printf "http://%s.%s.svc.cluster.local:9000" (include "maskgrpo.minioName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "maskgrpo.configName" -}}
{{- printf "%s-run" (include "maskgrpo.fullname" .) }}
{{- end }}

{{/* Environment shared by the project containers: store location and credentials, KFP host. */}}
{{- define "maskgrpo.env" -}}
- name: MASKGRPO_STORE
  value: {{ .Values.store.uri | quote }}
{{- with (include "maskgrpo.storeEndpoint" .) }}
- name: MASKGRPO_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- else }}
- name: MASKGRPO_S3_ENDPOINT_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "maskgrpo.storeSecretName" . }}
      key: MASKGRPO_S3_ENDPOINT_URL
      optional: true
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.store.region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "maskgrpo.storeSecretName" . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "maskgrpo.storeSecretName" . }}
      key: AWS_SECRET_ACCESS_KEY
- name: KFP_HOST
  value: {{ .Values.kfp.host | quote }}
- name: KF_PIPELINES_SA_TOKEN_PATH
  value: /var/run/secrets/kubeflow/pipelines/token
- name: HOME
  value: /home/maskgrpo
- name: PYTHONUNBUFFERED
  value: "1"
{{- end }}

{{/* Writable scratch for a read-only root filesystem. */}}
{{- define "maskgrpo.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: home
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{- define "maskgrpo.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/maskgrpo
{{- end }}

{{/* The KFP service-account token (audience pipelines.kubeflow.org) the kfp client reads in
multi-user mode; the default API token is not mounted. */}}
{{- define "maskgrpo.kfpTokenVolume" -}}
- name: kfp-token
  projected:
    sources:
      - serviceAccountToken:
          audience: pipelines.kubeflow.org
          expirationSeconds: 3600
          path: token
{{- end }}

{{- define "maskgrpo.kfpTokenMount" -}}
- name: kfp-token
  mountPath: /var/run/secrets/kubeflow/pipelines
  readOnly: true
{{- end }}

{{/* Pod-level scheduling and security shared by every pod. */}}
{{- define "maskgrpo.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The submitter container: `maskgrpo <verb> /etc/maskgrpo/pipeline.yaml ...`; pass a dict
{ctx, name, args, extraEnv (optional list)}. */}}
{{- define "maskgrpo.submitterContainer" -}}
{{- $ := .ctx -}}
- name: {{ .name }}
  image: {{ include "maskgrpo.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  command: ["maskgrpo"]
  args:
    {{- toYaml .args | nindent 4 }}
  env:
    {{- include "maskgrpo.env" $ | nindent 4 }}
    {{- with .extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext:
    {{- toYaml $.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $.Values.resources | nindent 4 }}
  volumeMounts:
    - name: pipeline
      mountPath: /etc/maskgrpo
      readOnly: true
    {{- include "maskgrpo.kfpTokenMount" $ | nindent 4 }}
    {{- include "maskgrpo.scratchMounts" $ | nindent 4 }}
{{- end }}

{{- define "maskgrpo.submitterVolumes" -}}
- name: pipeline
  configMap:
    name: {{ include "maskgrpo.configName" . }}
{{ include "maskgrpo.kfpTokenVolume" . }}
{{ include "maskgrpo.scratchVolumes" . }}
{{- end }}

{{/* The run document as written to the ConfigMap: `run` with cluster.store and cluster.s3_secret
taken from the chart's store settings, so the stages read and write where the chart's pods do. */}}
{{- define "maskgrpo.runDocument" -}}
{{- $run := deepCopy .Values.run }}
{{- $cluster := get $run "cluster" | default dict }}
{{- $_ := set $cluster "store" .Values.store.uri }}
{{- $_ := set $cluster "s3_secret" (include "maskgrpo.storeSecretName" .) }}
{{- $_ := set $run "cluster" $cluster }}
{{- toYaml $run }}
{{- end }}
