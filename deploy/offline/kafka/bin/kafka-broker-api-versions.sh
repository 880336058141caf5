#!/usr/bin/env bash
exec /opt/kafka/bin/kafka-run-class.sh -Xmx128m org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
