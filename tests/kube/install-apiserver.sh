#!/usr/bin/env bash
# Installs a real Kubernetes API server for the integration tests (tests/kube/apiserver.py),
# both built from the Go module proxy with the machine's go (CGO_ENABLED=0):
#   - <repo>/.gen/etcd            go.etcd.io/etcd/server/v3 (about 1 min the first time)
#   - <repo>/.gen/kube-apiserver  k8s.io/kubernetes/cmd/kube-apiserver (about 3.5 min)
# Idempotent: when both binaries exist and report the wanted versions it returns at once.
# Works from any cwd. Needs only `go` and the Go module proxy (no apt, no root).
#
# Environment knobs:
#   KUBE_VERSION   Kubernetes release to build (default v1.34.4)
#   ETCD_VERSION   etcd release to build (default v3.6.5, the one v1.34 pins)
#   BUILD_JOBS     go build parallelism (default 2)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${SCRIPT_DIR}/../.." && pwd)"
GEN="${REPO}/.gen"
KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
BUILD_JOBS="${BUILD_JOBS:-2}"
BIN="${GEN}/kube-apiserver"
ETCD_BIN="${GEN}/etcd"

log() { echo "install-apiserver: $*" >&2; }

# ---------------------------------------------------------------- etcd
# Not Debian's etcd-server (3.4.23 in bookworm): it lacks RequestWatchProgress, so
# kube-apiserver answers every streaming list (watch with sendInitialEvents=true, the
# WatchList feature used by newer client-go informers) with HTTP 500. etcd 3.6 is the line
# Kubernetes 1.34 is tested with.
etcd_ok() {
  [ -x "${ETCD_BIN}" ] \
    && "${ETCD_BIN}" --version 2>/dev/null | grep -qx "etcd Version: ${ETCD_VERSION#v}"
}

build_etcd() {
  if etcd_ok; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || { log "go is not on PATH"; return 1; }
  local start=${SECONDS}
  local build="${GEN}/build/etcd-${ETCD_VERSION}"
  log "building etcd ${ETCD_VERSION} in ${build}"
  mkdir -p "${build}"
  # go.etcd.io/etcd/server/v3 has a main package at its root, but its go.mod replaces
  # its sibling modules with ../api etc., so `go install ...@version` refuses it: build it
  # from a throwaway main module (where the dependency's replaces do not apply).
  (
    cd "${build}"
    rm -f go.mod go.sum
    printf 'module rackroute.local/etcdbuild\n\ngo 1.24.0\n' > go.mod
    export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
    go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null 2>go-get.log \
      || { cat go-get.log >&2; exit 1; }
    go build -p "${BUILD_JOBS}" -trimpath -ldflags "-s -w" \
      -o "${ETCD_BIN}.tmp" go.etcd.io/etcd/server/v3
    mv -f "${ETCD_BIN}.tmp" "${ETCD_BIN}"
  )
  etcd_ok || { log "built ${ETCD_BIN} but its --version is not ${ETCD_VERSION}"; return 1; }
  log "built etcd ${ETCD_VERSION} in $((SECONDS - start)) s"
}

# ---------------------------------------------------------------- kube-apiserver
apiserver_ok() {
  [ -x "${BIN}" ] && "${BIN}" --version 2>/dev/null | grep -qx "Kubernetes ${KUBE_VERSION}"
}

build_apiserver() {
  if apiserver_ok; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || { log "go is not on PATH"; return 1; }
  local start=${SECONDS}
  local staging_version="v0.${KUBE_VERSION#v1.}"  # v1.34.4 -> v0.34.4
  local build="${GEN}/build/kube-apiserver-${KUBE_VERSION}"
  log "building kube-apiserver ${KUBE_VERSION} in ${build} (takes several minutes)"
  mkdir -p "${build}"

  # k8s.io/kubernetes replaces its staging modules (k8s.io/api, apiserver, ...) with
  # ./staging/src/..., which is not in the module zip, and `go install pkg@version` refuses
  # modules with replace directives. So a throwaway main module requires k8s.io/kubernetes
  # and replaces each staging module with its published v0.X.Y twin.
  local gomod
  gomod="$(cd "${build}" && rm -f go.mod go.sum \
    && go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "${gomod}" ] || { log "could not download k8s.io/kubernetes@${KUBE_VERSION}"; return 1; }
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "${gomod}")"
  # Same language/GODEBUG defaults as an upstream build of this release.
  local go_directive godebug
  go_directive="$(sed -n 's/^go \(.*\)$/\1/p' "${gomod}")"
  godebug="$(sed -n 's/^godebug \(.*\)$/\1/p' "${gomod}")"

  (
    cd "${build}"
    rm -f go.mod go.sum
    {
      echo "module rackroute.local/kubeapiserverbuild"
      echo
      echo "go ${go_directive}"
      [ -n "${godebug}" ] && echo "godebug ${godebug}"
      echo
      echo "require k8s.io/kubernetes ${KUBE_VERSION}"
      echo
      echo "replace ("
      for m in ${staging}; do echo "	${m} => ${m} ${staging_version}"; done
      echo ")"
    } > go.mod
    export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@${KUBE_VERSION}" >/dev/null 2>go-get.log \
      || { cat go-get.log >&2; exit 1; }

    local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    local ldflags="-s -w" key val
    for kv in "gitVersion=${KUBE_VERSION}" gitMajor=1 "gitMinor=${minor}" \
              gitTreeState=clean "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
      key="${kv%%=*}"; val="${kv#*=}"
      ldflags+=" -X k8s.io/component-base/version.${key}=${val}"
      ldflags+=" -X k8s.io/client-go/pkg/version.${key}=${val}"
    done
    go build -p "${BUILD_JOBS}" -trimpath -ldflags "${ldflags}" \
      -o "${BIN}.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    mv -f "${BIN}.tmp" "${BIN}"
  )
  apiserver_ok || { log "built ${BIN} but its --version is not ${KUBE_VERSION}"; return 1; }
  log "built kube-apiserver ${KUBE_VERSION} in $((SECONDS - start)) s"
}

export GOWORK=off GO111MODULE=on
mkdir -p "${GEN}/build"
if etcd_ok && apiserver_ok; then
  exit 0
fi
# One build at a time (CI and a developer, or parallel test workers, may all call this).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${GEN}/build/install.lock"
  flock 9
fi
build_etcd
build_apiserver
