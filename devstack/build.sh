#!/usr/bin/env bash
# Builds the stack's Go programs once into a cache outside the repository and reuses them.
# Cache: ${CAPSTAN_CACHE:-$HOME/.cache/capstan}/bin/<name>-<version>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${CAPSTAN_CACHE:-$HOME/.cache/capstan}
bin=$cache/bin
work=$cache/build
mkdir -p "$bin" "$work"
# One build at a time (two `stack up` calls on a fresh machine): the second waits, then finds
# the binaries built.
exec 9>"$cache/build.lock"
flock 9
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
export GOTOOLCHAIN=local

log() { printf '[devstack build] %s\n' "$*" >&2; }

# wrapper_build NAME VERSION MAIN_GO REQUIRE_LINES REPLACE_LINES [EXTRA_LDFLAGS]
wrapper_build() {
  local name=$1 version=$2 main_go=$3 requires=$4 replaces=$5 ldflags="-s -w ${6:-}"
  local out=$bin/$name-$version
  [ -x "$out" ] && return 0
  log "building $name $version (first run only; several minutes on 2 cores)"
  local dir=$work/$name-$version
  mkdir -p "$dir"
  printf '%s\n' "$main_go" >"$dir/main.go"
  cat >"$dir/go.mod" <<MOD
module capstan.dev/devstack/$name

go 1.24

require (
$requires
)

$replaces
MOD
  (cd "$dir" && go mod tidy >/dev/null && go build -trimpath -ldflags="$ldflags" -o "$out.tmp" . && mv "$out.tmp" "$out")
  log "built $out"
}

build_etcd() {
  wrapper_build etcd "$ETCD_VERSION" 'package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }' "	go.etcd.io/etcd/server/v3 $ETCD_VERSION" ""
}

build_kube_apiserver() {
  local minor=${KUBERNETES_VERSION#v1.}
  local staging_version=v0.$minor
  local replaces="replace (" mod
  for mod in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
      cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
      kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
      mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller \
      streaming; do
    replaces+=$'\n'"	k8s.io/$mod => k8s.io/$mod $staging_version"
  done
  replaces+=$'\n'")"
  wrapper_build kube-apiserver "$KUBERNETES_VERSION" 'package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }' "	k8s.io/kubernetes $KUBERNETES_VERSION" "$replaces" "$(k8s_version_ldflags)"
}

# Stamp the version the way Kubernetes' own build does, so /version and clients see v1.X.Y
# instead of v0.0.0-master.
k8s_version_ldflags() {
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local pkg flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}

# go_install NAME PACKAGE VERSION [EXTRA_LDFLAGS]: `go install PACKAGE@VERSION`, the binary
# (named after the package's last path element) moved to the cache as NAME-VERSION.
go_install() {
  local name=$1 pkg=$2 version=$3 ldflags="-s -w ${4:-}"
  local out=$bin/$name-$version
  [ -x "$out" ] && return 0
  log "building $name $version (first run only; several minutes on 2 cores)"
  local gobin=$work/gobin-$name-$version
  GOBIN=$gobin go install -trimpath -ldflags="$ldflags" "$pkg@$version"
  mv "$gobin/$(basename "$pkg")" "$out"
  log "built $out"
}

build_minio() { go_install minio github.com/minio/minio "$MINIO_VERSION"; }
# livekit-server: its module path is github.com/livekit/livekit-server but the program's package
# is ./cmd/server, so `go install` leaves a binary named `server` (renamed by go_install).
# Pinned to v1.13.5: see versions.env.
build_livekit() { go_install livekit-server github.com/livekit/livekit-server/cmd/server "$LIVEKIT_VERSION"; }
# stamped as helm's release build does (`helm version` says v3.22.0, not v3.22)
build_helm() {
  go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}
# stamped with the Go module version (Prometheus tags its module v0.3XX.Y for release 3.XX.Y)
build_promtool() {
  go_install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION" \
    "-X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION"
}

# capstan-lkpublish: the pusher's LiveKit publisher (go/lkpublish, docs/streampush.md), built from the
# repository's source as capstan-lkpublish-<hash of go.mod, go.sum and *.go> (devstack/stack.py
# computes the same name), so a change of its source builds it anew; bin/capstan-lkpublish links to
# the newest one (the pusher looks there: capstan/pusher/lkpublish.py).
lkpublish_hash() {
  (cd "$here/../go/lkpublish" && cat go.mod go.sum $(LC_ALL=C ls -- *.go) | sha1sum | cut -c1-12)
}
build_lkpublish() {
  local hash; hash=$(lkpublish_hash)
  local out=$bin/capstan-lkpublish-$hash
  if [ ! -x "$out" ]; then
    log "building capstan-lkpublish $hash"
    (cd "$here/../go/lkpublish" && go build -trimpath -ldflags="-s -w" -o "$out.tmp" . && mv "$out.tmp" "$out")
    log "built $out"
  fi
  ln -sfn "$(basename "$out")" "$bin/capstan-lkpublish"
}

targets=${*:-etcd kube_apiserver minio livekit helm promtool lkpublish}
for t in $targets; do "build_$t"; done
