#!/usr/bin/env bash
exec /opt/kafka/bin/kafka-run-class.sh -Xmx256m kafka.admin.ConfigCommand "$@"
