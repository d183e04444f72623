#!/usr/bin/env bash
# Fetch the Apache Kafka Java client jars (kafka-clients, kafka-tools, slf4j-simple
# and their runtime dependencies) into a cache directory reused across runs.
# Idempotent: does nothing when the cache is already complete.
# Prints the jar directory on stdout (everything else goes to stderr).
#   KAFKA_VERSION   kafka-clients/kafka-tools version (default 4.1.1)
#   CHRONIK_JARS_DIR  override the output directory
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
CACHE="${CHRONIK_CACHE:-$HOME/.cache/chronik}"
out="${CHRONIK_JARS_DIR:-$CACHE/jars/kafka-$KAFKA_VERSION}"
stamp="$out/.complete"

if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$(sha256sum "$here/pom.xml" | cut -d' ' -f1)" ]]; then
  echo "$out"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch-jars.sh: mvn not found (install maven)" >&2; exit 1; }

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp" "$tmp.log"' EXIT
echo "fetch-jars.sh: copying kafka $KAFKA_VERSION client jars into $out" >&2
if ! mvn -B -q -Dstyle.color=never -f "$here/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies \
    -DincludeScope=runtime \
    -DoutputDirectory="$tmp" >"$tmp.log" 2>&1 </dev/null; then
  cat "$tmp.log" >&2
  rm -f "$tmp.log"
  echo "fetch-jars.sh: mvn dependency:copy-dependencies failed" >&2
  exit 1
fi
rm -f "$tmp.log"
ls "$tmp"/kafka-clients-*.jar "$tmp"/kafka-tools-*.jar >/dev/null
sha256sum "$here/pom.xml" | cut -d' ' -f1 > "$tmp/.complete"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
