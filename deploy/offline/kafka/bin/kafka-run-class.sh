#!/usr/bin/env bash
# `kafka-run-class.sh [JVM options] <main class> [arguments]`, as the Kafka distribution's.
set -euo pipefail
jvm=()
while [[ $# -gt 0 && "$1" == -* ]]; do jvm+=("$1"); shift; done
exec java "${jvm[@]}" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    ${KAFKA_OPTS:-} -cp "/opt/kafka/libs/*" "$@"
