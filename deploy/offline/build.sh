#!/usr/bin/env bash
# Every image docker-compose.yml runs, built from packages alone (Debian's mirror, Maven Central,
# PyPI): what a site with no image registry but an internal mirror of those needs. Tags them as
# deploy/compose.offline.yml expects; an image already built is kept (HILO_OFFLINE_REBUILD=1 to
# rebuild all). Grafana and the Kafka exporter are not built: neither is in Debian, and the
# exporter's module is not on the Go module proxy (the offline override leaves them out).
#
#   deploy/offline/build.sh          # then:
#   docker compose -f docker-compose.yml -f deploy/compose.offline.yml up -d --build
#
# Settings: DEBIAN_MIRROR (http://deb.debian.org/debian), HILO_CA_BUNDLE (the CA bundle the
# images trust for PyPI; default: this host's), HILO_VERSION (the Hilo image's tag, `local`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix="${HILO_OFFLINE_PREFIX:-hilo-offline}"
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/deploy/local/kafka/pom.xml")
secantus_version=$(sed -n 's/^SecantusDB==//p' "$root/deploy/local/secantusdb/requirements.txt")
ca_bundle="${HILO_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

BASE="$prefix/debian:bookworm"
PYTHON="$prefix/python:3.11-bookworm"
KAFKA="$prefix/kafka:$kafka_version"
MONGO="$prefix/mongo-wire:$secantus_version"
PROMETHEUS="$prefix/prometheus:debian-bookworm"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf 'offline images: %s\n' "$*"; }
have() { [ -z "${HILO_OFFLINE_REBUILD:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }
build() {  # build <tag> <context> [docker build arguments...]
    local tag="$1" context="$2"
    shift 2
    local started=$SECONDS
    docker build --quiet --tag "$tag" "$@" "$context" >/dev/null
    say "$tag built in $((SECONDS - started)) s"
}
context() {  # a copy of deploy/offline/<name> to add build inputs to
    cp -r "$here/$1" "$work/$1"
    echo "$work/$1"
}

have "$BASE" || { started=$SECONDS; "$here/base/build.sh" "$BASE"; say "$BASE imported in $((SECONDS - started)) s"; }

if ! have "$PYTHON"; then
    [ -f "$ca_bundle" ] || { echo "offline images: no CA bundle at $ca_bundle (set HILO_CA_BUNDLE)" >&2; exit 1; }
    dir=$(context python)
    cp "$ca_bundle" "$dir/site-ca.pem"
    build "$PYTHON" "$dir" --build-arg "BASE=$BASE"
fi

if ! have "$KAFKA"; then
    dir=$(context kafka)
    mvn -q -B -f "$dir/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
        "-Dkafka.version=$kafka_version" "-DoutputDirectory=$dir/libs"
    build "$KAFKA" "$dir" --build-arg "BASE=$BASE"
fi

if ! have "$MONGO"; then
    dir=$(context mongo-wire)
    cp "$root/deploy/local/secantusdb/requirements.txt" "$dir/requirements.txt"
    build "$MONGO" "$dir" --build-arg "PYTHON=$PYTHON"
fi

have "$PROMETHEUS" || build "$PROMETHEUS" "$here/prometheus" --build-arg "BASE=$BASE"

say "ready: $BASE $PYTHON $KAFKA $MONGO $PROMETHEUS"
