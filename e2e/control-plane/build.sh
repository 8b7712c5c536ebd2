#!/usr/bin/env bash
# Builds the end-to-end tests' control plane from this Go module: kube-apiserver,
# kube-controller-manager and kube-scheduler from k8s.io/kubernetes (the release go.mod
# pins) and etcd from go.etcd.io/etcd/server/v3 (the version that release's client uses).
# The binaries go into a cache outside the source tree, keyed by go.mod, go.sum and the
# sources, so a machine builds them once: ${PX_E2E_CACHE:-${XDG_CACHE_HOME:-~/.cache}/px-e2e}.
# Prints the directory that holds them. Safe to run from several processes at once.
set -euo pipefail
cd "$(dirname "$0")"

# The machines have Go 1.26 in /usr/local/go; Debian's older golang-go may also be on PATH.
if [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
command -v go >/dev/null || { echo "control-plane: go not found (Go 1.26 is needed)" >&2; exit 1; }

release=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' go.mod)
key=$(cat go.mod go.sum cmd/etcd/main.go build.sh | sha256sum | cut -c1-16)
cache=${PX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/px-e2e}
out="$cache/control-plane-$release-$key"
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd)

complete() {
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}

mkdir -p "$cache"
exec 9>"$cache/control-plane.lock"
flock 9
if ! complete; then
  started=$(date +%s)
  echo "control-plane: building Kubernetes $release (kube-apiserver, kube-controller-manager, kube-scheduler) and etcd into $out; the first build takes several minutes" >&2
  tmp="$out.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Version stamps as Kubernetes' own build sets them, so /version and kubectl see the release.
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$release -X $pkg.gitMajor=$(echo "${release#v}" | cut -d. -f1) -X $pkg.gitMinor=$(echo "$release" | cut -d. -f2) -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  export CGO_ENABLED=0 GOFLAGS=-mod=readonly
  go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
  go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" ./cmd/etcd
  rm -rf "$out"
  mv "$tmp" "$out"
  echo "control-plane: built in $(( $(date +%s) - started )) s" >&2
fi
echo "$out"
