#!/usr/bin/env bash
exec /opt/kafka/bin/kafka-run-class.sh -Xmx256m org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"
