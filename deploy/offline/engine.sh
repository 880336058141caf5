#!/usr/bin/env bash
# A Docker engine and Compose v2 on a machine that has neither, from packages alone: Debian's
# docker.io, and Compose built from the Go module proxy (no image registry, no GitHub release).
# Idempotent: what is there already is left as it is. Needs root for what it installs.
set -euo pipefail

COMPOSE_VERSION="${COMPOSE_VERSION:-v2.40.3}"
PLUGINS=/usr/local/lib/docker/cli-plugins

say() { printf 'engine: %s\n' "$*"; }

engine_answers() { docker info >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "engine: dockerd is missing; run as root or install docker.io" >&2; exit 1; }
    say "installing docker.io (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if ! engine_answers; then
    [ "$(id -u)" = 0 ] || { echo "engine: no Docker engine answers and this is not root" >&2; exit 1; }
    say "starting dockerd (log: /var/log/hilo-dockerd.log)"
    nohup dockerd >/var/log/hilo-dockerd.log 2>&1 &
    for _ in $(seq 60); do engine_answers && break; sleep 1; done
    engine_answers || { echo "engine: dockerd did not answer in 60 s; see /var/log/hilo-dockerd.log" >&2; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
    command -v go >/dev/null 2>&1 || { echo "engine: Compose v2 is missing and Go is not installed to build it" >&2; exit 1; }
    say "building Compose ${COMPOSE_VERSION} from the Go module proxy"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # `go install` refuses the module (its go.mod has exclude directives): build inside it.
    dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v2@${COMPOSE_VERSION}" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    cp -r "$dir" "$work/src" && chmod -R u+w "$work/src"
    (cd "$work/src" && go build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=${COMPOSE_VERSION}" \
        -o "$work/docker-compose" ./cmd)
    mkdir -p "$PLUGINS"
    install -m 0755 "$work/docker-compose" "$PLUGINS/docker-compose"
fi

say "$(docker version --format 'engine {{.Server.Version}}') · $(docker compose version --short | sed 's/^/compose /')"
