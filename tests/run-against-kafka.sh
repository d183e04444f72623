#!/usr/bin/env bash
# Run the e2e suite against Apache Kafka (bench/kafka-local.sh) instead of chronik-broker:
# validates the tests themselves. Kill/restart tests run too (via KAFKA_EXTERNAL_CTL);
# Chronik-only tests (metrics, TOML config) skip. Extra args go to pytest.
#   tests/run-against-kafka.sh            # start Kafka, run, stop Kafka
#   KEEP_KAFKA=1 tests/run-against-kafka.sh -k codec
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
port="${KAFKA_LOCAL_PORT:-19092}"
bench/kafka-local.sh start
if [[ "${KEEP_KAFKA:-0}" != "1" ]]; then trap 'bench/kafka-local.sh stop' EXIT; fi
KAFKA_EXTERNAL_BOOTSTRAP="127.0.0.1:$port" KAFKA_EXTERNAL_CTL=bench/kafka-local.sh \
  "${PYTHON:-python}" -m pytest tests/e2e -q "$@"
