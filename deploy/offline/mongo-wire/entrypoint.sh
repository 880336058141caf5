#!/bin/sh
# SecantusDB as the mongo image runs MongoDB: with MONGO_INITDB_ROOT_USERNAME set, the users are
# created on first start (provision.py) and the server requires authentication (SCRAM-SHA-256).
# It answers drivers as a single-node replica set whose one member is the address it listens on:
# that must be a name clients reach (the compose service name, MONGO_WIRE_HOST), not 0.0.0.0.
set -e
if [ -n "${MONGO_INITDB_ROOT_USERNAME:-}" ]; then
    /opt/secantusdb/bin/python /opt/secantusdb/provision.py
    set -- --auth "$@"
fi
exec /opt/secantusdb/bin/secantusd-py --host="${MONGO_WIRE_HOST:-0.0.0.0}" --port=27017 \
    --storage-path=/data/db --log-level="${MONGO_WIRE_LOG_LEVEL:-WARNING}" \
    --cache-size="${MONGO_WIRE_CACHE_SIZE:-512M}" "$@"
