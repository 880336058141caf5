#!/bin/sh
# SecantusDB answers drivers as a single-node replica set whose one member is the address it
# listens on: that must be a name clients can reach (the compose service name), not 0.0.0.0.
exec /opt/secantusdb/bin/secantusd-py --host="${MONGO_WIRE_HOST:-0.0.0.0}" --port=27017 \
    --storage-path=/data/db --log-level="${MONGO_WIRE_LOG_LEVEL:-WARNING}" \
    --cache-size="${MONGO_WIRE_CACHE_SIZE:-512M}" "$@"
