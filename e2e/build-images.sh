#!/usr/bin/env bash
# Build the four images from images/Dockerfile (one per pyproject extra) and, with a kind cluster
# name, load them into it:  e2e/build-images.sh [TAG] [KIND_CLUSTER]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-e2e}
cluster=${2:-}
for component in operator recorder pusher panorama; do
  image=ghcr.io/capstan-dev/capstan-$component:$tag
  docker build -f images/Dockerfile --build-arg EXTRA=$component -t "$image" .
  if [ -n "$cluster" ]; then
    kind load docker-image --name "$cluster" "$image"
  fi
done
