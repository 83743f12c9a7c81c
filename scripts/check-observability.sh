#!/usr/bin/env bash
# Checks what `cargo test` cannot without extra tools: the /metrics output
# passes `promtool check metrics`, and the status page renders in headless
# Chromium showing a route with an open breaker as degraded (a screenshot is
# saved to target/status-page.png). Needs the release binary, promtool
# (Debian: prometheus) and chromium; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/switchyard
work=$(mktemp -d)
cleanup() {
  [ -f "$work/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
  rm -rf "$work"
}
trap cleanup EXIT

# Starts `switchyard ARGS...` and prints the URL from its first stdout line.
# (Runs in a command substitution, so pids go to a file, not a variable.)
start() {
  local out="$work/out.$RANDOM"
  "$bin" "$@" >"$out" 2>"$out.err" &
  echo $! >>"$work/pids"
  for _ in $(seq 1 100); do
    if [ -s "$out" ]; then awk '{print $NF; exit}' "$out"; return; fi
    sleep 0.05
  done
  echo "switchyard $1 did not start:" >&2; cat "$out.err" >&2; exit 1
}

failing=$(start sim --listen 127.0.0.1:0 --models gpt-4o --error-rate 503=1.0 --name failing)
healthy=$(start sim --listen 127.0.0.1:0 --models gpt-4o --name healthy)
cat >"$work/gw.toml" <<TOML
[server]
listen = "127.0.0.1:0"
auth = "none"
# The detailed page (target names), which the check below looks for.
public_status = false
[defaults.retry]
max_attempts_per_target = 1
[defaults.breaker]
consecutive_failures = 2
open_base = "10m"
open_max = "10m"
[providers.primary]
base_url = "$failing"
[providers.secondary]
base_url = "$healthy"
[routes.chat-default]
targets = [{ provider = "primary", model = "gpt-4o" }, { provider = "secondary", model = "gpt-4o" }]
TOML
gateway=$(start serve --config "$work/gw.toml")
base=${gateway%/v1}

for _ in $(seq 1 10); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$gateway/chat/completions" -H 'content-type: application/json' -d '{"model":"chat-default","messages":[]}')
  [ "$code" = 200 ] || { echo "request failed with $code" >&2; exit 1; }
done

echo "== promtool check metrics"
curl -sf "$base/metrics" | promtool check metrics
echo "ok"

echo "== status page in headless Chromium"
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$work/chrome")
dom=$("${chrome[@]}" --dump-dom "$base/status" 2>/dev/null)
grep -q "Some routes are degraded" <<<"$dom" || { echo "status page does not show the route as degraded" >&2; exit 1; }
grep -q "primary/gpt-4o" <<<"$dom" || { echo "status page does not list the target" >&2; exit 1; }
grep -q ">open<" <<<"$dom" || { echo "status page does not show the open breaker" >&2; exit 1; }
mkdir -p target
"${chrome[@]}" --window-size=420,1100 --screenshot="$PWD/target/status-page.png" "$base/status" >/dev/null 2>&1
[ -s target/status-page.png ] || { echo "no screenshot" >&2; exit 1; }
echo "ok (screenshot: target/status-page.png)"
