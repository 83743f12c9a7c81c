#!/usr/bin/env bash
# Checks what `cargo test` cannot without extra tools: the /metrics output
# passes `promtool check metrics`; the status page renders in headless
# Chromium showing an open breaker as a major outage (screenshot:
# target/status-page.png); and a gateway over a request log seeded with 90
# days of history, its primary failing ~30% of attempts, renders at phone
# width with uptime bars and a partial outage (target/status-phone.png).
# Needs the release binary (or SWITCHYARD_BIN), promtool (Debian:
# prometheus), chromium and sqlite3; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SWITCHYARD_BIN:-target/release/switchyard}
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
grep -q "Major outage: primary/gpt-4o" <<<"$dom" || { echo "status page does not show the open breaker as a major outage" >&2; exit 1; }
grep -q "primary/gpt-4o" <<<"$dom" || { echo "status page does not list the target" >&2; exit 1; }
grep -q ">open<" <<<"$dom" || { echo "status page does not show the open breaker" >&2; exit 1; }
mkdir -p target
"${chrome[@]}" --window-size=420,1100 --screenshot="$PWD/target/status-page.png" "$base/status" >/dev/null 2>&1
[ -s target/status-page.png ] || { echo "no screenshot" >&2; exit 1; }
echo "ok (screenshot: target/status-page.png)"

echo "== seeded status page at phone width"
# 90 days x 24 hours x 10 requests on chat-default, with a few bad hours.
cat >"$work/seed.sql" <<'SQL'
INSERT INTO request_log (at_ms, request_id, key_name, route, stream, attempts, served_target, status, outcome, latency_ms)
WITH RECURSIVE h(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM h WHERE n < 2159),
  k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < 9),
  seed(n, i, bad) AS (SELECT n, i, (n BETWEEN 3 AND 4 AND i < 4) OR (n BETWEEN 400 AND 420 AND i < 7)
    OR (n BETWEEN 1500 AND 1505 AND i < 1) FROM h, k)
SELECT CAST(strftime('%s', 'now') AS INTEGER) * 1000 - n * 3600000 - i * 1000, 'seed-' || n || '-' || i,
  'anonymous', 'chat-default', 0, '[]', 'secondary/gpt-4o', CASE WHEN bad THEN 503 ELSE 200 END,
  CASE WHEN bad THEN 'upstream_unavailable' ELSE 'ok' END, 0.42
FROM seed;
SQL
flaky=$(start sim --listen 127.0.0.1:0 --models gpt-4o --error-rate 503=0.3 --name flaky)
cat >"$work/seeded.toml" <<TOML
[server]
listen = "127.0.0.1:0"
auth = "none"
public_status = false
[store]
url = "sqlite://$work/seeded.db"
[request_log]
enabled = true
retention = "100d"
[defaults.retry]
max_attempts_per_target = 1
[defaults.breaker]
consecutive_failures = 50
min_requests = 1000
[providers.primary]
base_url = "$flaky"
[providers.secondary]
base_url = "$healthy"
[routes.chat-default]
targets = [{ provider = "primary", model = "gpt-4o" }, { provider = "secondary", model = "gpt-4o" }]
slo = { success = 0.99 }
TOML
seeded=$(start serve --config "$work/seeded.toml")
seeded_base=${seeded%/v1}
sqlite3 "$work/seeded.db" <"$work/seed.sql"
for _ in $(seq 1 40); do
  curl -s -o /dev/null "$seeded/chat/completions" -H 'content-type: application/json' -d '{"model":"chat-default","messages":[]}'
done
dom=$("${chrome[@]}" --window-size=390,1200 --dump-dom "$seeded_base/status" 2>/dev/null)
grep -q 'data-bars="days"' <<<"$dom" || { echo "seeded status page has no uptime bars" >&2; exit 1; }
grep -q 'class="partial_outage"' <<<"$dom" || { echo "seeded status page shows no bad hour" >&2; exit 1; }
grep -Eq 'banner b-(partial|major)_outage' <<<"$dom" || { echo "a primary failing ~30% is not an outage on the page" >&2; exit 1; }
grep -q ' ms / ' <<<"$dom" || { echo "no latency on the page" >&2; exit 1; }
"${chrome[@]}" --window-size=390,1200 --screenshot="$PWD/target/status-phone.png" "$seeded_base/status" >/dev/null 2>&1
[ -s target/status-phone.png ] || { echo "no phone screenshot" >&2; exit 1; }
echo "ok (screenshot: target/status-phone.png)"
