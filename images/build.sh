#!/usr/bin/env bash
# Builds the px-operator, vizier-pem and kelvin images from images/Containerfile with
# whichever of docker, podman or buildah is installed, tagged REGISTRY/NAME:VERSION where
# VERSION is the chart's appVersion (what the chart and the operator run by default).
#
#   images/build.sh                               # px/px-operator:0.1.0, px/vizier-pem:0.1.0, px/kelvin:0.1.0
#   images/build.sh --registry ghcr.io/me --push  # then: helm install ... --set image.repository=ghcr.io/me/px-operator
#
# Options: --registry R (default px, or $PX_REGISTRY), --push, --engine docker|podman|buildah.
set -euo pipefail
cd "$(dirname "$0")/.."

registry=${PX_REGISTRY:-px}
push=false
engine=${PX_IMAGE_ENGINE:-}
while (($#)); do
  case $1 in
    --registry) registry=${2:?--registry needs a value}; shift 2 ;;
    --push) push=true; shift ;;
    --engine) engine=${2:?--engine needs a value}; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
registry=${registry%/}

if [ -z "$engine" ]; then
  for candidate in docker podman buildah; do
    if command -v "$candidate" >/dev/null; then engine=$candidate; break; fi
  done
fi
if [ -z "$engine" ]; then
  echo "build.sh: no container engine found; install docker, podman or buildah" >&2
  exit 1
fi

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/px/Chart.yaml)
[ -n "$version" ] || { echo "build.sh: no appVersion in charts/px/Chart.yaml" >&2; exit 1; }

for target in px-operator vizier-pem kelvin; do
  tag="$registry/$target:$version"
  echo "build.sh: $engine: $tag" >&2
  case $engine in
    # BuildKit, for the cache mounts.
    docker) DOCKER_BUILDKIT=1 docker build -f images/Containerfile --target "$target" -t "$tag" . ;;
    podman) podman build -f images/Containerfile --target "$target" -t "$tag" . ;;
    buildah) buildah bud -f images/Containerfile --target "$target" -t "$tag" . ;;
    *) echo "build.sh: --engine must be docker, podman or buildah, not $engine" >&2; exit 2 ;;
  esac
  if $push; then
    case $engine in
      buildah) buildah push "$tag" ;;
      *) "$engine" push "$tag" ;;
    esac
  fi
done
echo "build.sh: built ${registry}/{px-operator,vizier-pem,kelvin}:$version" >&2
