#!/usr/bin/env bash
# End-to-end on kind, where Docker exists (a hosted CI runner; not the development machines):
# a kind cluster, the images, MinIO and LiveKit, the chart, then e2e/scenarios.py. Exits non-zero
# when any step or scenario fails.  e2e/run.sh [SCENARIOS]   (default: record,mix,push,web)
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-capstan-e2e}
scenarios=${1:-record,mix,push,web}

if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 120s
fi
kubectl config use-context "kind-$cluster"
e2e/build-images.sh e2e "$cluster"

kubectl create namespace e2e --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f e2e/manifests/minio.yaml -f e2e/manifests/livekit.yaml
kubectl -n e2e rollout status deployment/minio --timeout=300s
kubectl -n e2e rollout status deployment/livekit --timeout=300s
kubectl -n e2e apply -f - <<'YAML'
apiVersion: v1
kind: Secret
metadata: {name: livekit-credentials, labels: {capstan.dev/use: "true"}}
stringData: {apiKey: e2e-key, apiSecret: e2e-secret-0123456789abcdef0123456789}
---
apiVersion: v1
kind: Secret
metadata: {name: storage-credentials, labels: {capstan.dev/use: "true"}}
stringData: {accessKey: e2e-access, secretKey: e2e-secret-key-0123456789}
YAML

helm upgrade --install capstan charts/capstan --namespace capstan-system --create-namespace \
  -f e2e/values.yaml --wait --timeout 5m
helm test capstan --namespace capstan-system --timeout 3m

python -m e2e.scenarios --namespace e2e --scenarios "$scenarios"
