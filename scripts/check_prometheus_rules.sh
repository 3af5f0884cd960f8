#!/usr/bin/env bash
# Check and unit-test the shipped Prometheus alert rules with promtool:
#   promtool check rules docs/prometheus/chaos_alerts.yml
#   promtool test rules  docs/prometheus/chaos_alerts_test.yml
# promtool comes with Prometheus (Debian/Ubuntu: apt-get install prometheus). PROMTOOL names
# another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

promtool="${PROMTOOL:-promtool}"
if ! command -v "$promtool" >/dev/null 2>&1; then
  echo "check_prometheus_rules: promtool not found (looked for '$promtool')." >&2
  echo "  Install it: apt-get install prometheus (Debian/Ubuntu), or take promtool from" >&2
  echo "  https://prometheus.io/download/ ; or set PROMTOOL=/path/to/promtool." >&2
  exit 127
fi

echo "check_prometheus_rules: $("$promtool" --version 2>&1 | head -n 1)"
"$promtool" check rules docs/prometheus/chaos_alerts.yml
"$promtool" test rules docs/prometheus/chaos_alerts_test.yml
