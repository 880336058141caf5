#!/usr/bin/env bash
# Writes server.properties from the KAFKA_* environment, as apache/kafka does, formats the storage
# on first start, and runs the broker in the foreground.
set -euo pipefail

config=/opt/kafka/config/server.properties
: >"$config"
skip=" KAFKA_HEAP_OPTS KAFKA_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_LOG4J_OPTS KAFKA_VERSION KAFKA_HOME "
for name in $(compgen -e | grep '^KAFKA_' || true); do
    [[ "$skip" == *" $name "* ]] && continue
    key=${name#KAFKA_}
    key=${key,,}
    key=${key//___/-}
    key=${key//__/@}
    key=${key//_/.}
    key=${key//@/_}
    printf '%s=%s\n' "$key" "${!name}" >>"$config"
done
grep -q '^log.dirs=' "$config" || echo "log.dirs=/var/lib/kafka/data" >>"$config"

data=$(sed -n 's/^log.dirs=//p' "$config" | cut -d, -f1)
if [ ! -f "$data/meta.properties" ]; then
    kafka-run-class.sh kafka.tools.StorageTool format \
        --cluster-id "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$config" --ignore-formatted
fi
exec kafka-run-class.sh ${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} kafka.Kafka "$config"
