#!/usr/bin/env bash
# Gateway memory per held stream: N concurrent streamed chat requests held
# open against a simulator that sends 1 token per second (30 tokens, so
# they outlast the sampling), the gateway's RSS before and at its plateau.
#   scripts/held-streams-rss.sh BIN N
# BIN is a release build of the gateway; it also runs the simulator. N up to
# about the open-file limit (raised to the hard limit here).
set -euo pipefail
BIN=$1; N=$2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
w=$(mktemp -d)
trap 'kill $GW $SIM 2>/dev/null || true; rm -rf "$w"' EXIT
"$BIN" sim --listen 127.0.0.1:0 --models gpt-4o-mini --completion-tokens 30 --tokens-per-sec 1 > "$w/sim.out" 2>/dev/null &
SIM=$!
for _ in $(seq 100); do [ -s "$w/sim.out" ] && break; sleep 0.05; done
cat > "$w/gw.toml" <<TOML
[server]
listen = "127.0.0.1:0"
auth = "none"
[store]
url = "sqlite://$w/store.db"
[providers.sim]
base_url = "$(awk '{print $NF; exit}' "$w/sim.out")"
[routes.paced]
targets = [{ provider = "sim", model = "gpt-4o-mini" }]
TOML
ulimit -n "$(ulimit -Hn)"
"$BIN" serve --config "$w/gw.toml" > "$w/gw.out" 2> "$w/gw.err" &
GW=$!
for _ in $(seq 300); do [ -s "$w/gw.out" ] && break; sleep 0.1; done
PORT=$(awk '{print $NF; exit}' "$w/gw.out" | sed 's|/v1$||; s|.*:||')
python3 "$ROOT/scripts/held_streams.py" 127.0.0.1 "$PORT" 20 "$GW" > /dev/null # warm-up
python3 "$ROOT/scripts/held_streams.py" 127.0.0.1 "$PORT" "$N" "$GW"
