#!/usr/bin/env bash
# Instructions the gateway executes per chat request, counted by callgrind
# (repeatable on a noisy machine). Run it twice, with N=0 and N=1000, and
# divide the difference by 1000:
#   scripts/callgrind-per-request.sh BIN LABEL N [STREAM=false]
# BIN is a release build of the gateway (any commit); the simulator is
# target/release/switchyard of this checkout, outside valgrind.
set -euo pipefail
BIN=$1; LABEL=$2; N=$3; STREAM=${4:-false}
NEW=${SIM_BIN:-"$(cd "$(dirname "$0")/.." && pwd)/target/release/switchyard"}
work=$(mktemp -d)
$NEW sim --listen 127.0.0.1:0 --models gpt-4o-mini --completion-tokens 16 > $work/sim.out 2>/dev/null &
SIMPID=$!
for i in $(seq 100); do [ -s $work/sim.out ] && break; sleep 0.05; done
SIMURL=$(awk '{print $NF; exit}' $work/sim.out)
cat > $work/gw.toml <<TOML
[server]
listen = "127.0.0.1:0"
auth = "none"
[providers.sim]
base_url = "$SIMURL"
[routes.chat-default]
targets = [{ provider = "sim", model = "gpt-4o-mini" }]
TOML
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=$work/cg.%p $BIN serve --config $work/gw.toml > $work/gw.out 2>$work/gw.err &
GWPID=$!
for i in $(seq 600); do [ -s $work/gw.out ] && break; sleep 0.1; done
GW=$(awk '{print $NF; exit}' $work/gw.out)
body='{"model":"chat-default","messages":[{"role":"user","content":"Say hello to the load test."}],"max_tokens":16,"stream":'$STREAM'}'
# warm-up: 20 requests (pools, caches) in every run, so N=0 includes them
for i in $(seq 20); do curl -s -o /dev/null "$GW/chat/completions" -H 'content-type: application/json' -d "$body"; done
for i in $(seq $N); do curl -s -o /dev/null "$GW/chat/completions" -H 'content-type: application/json' -d "$body"; done
kill -TERM $GWPID; wait $GWPID || true
kill $SIMPID || true
total=0
for f in $work/cg.*; do
  ir=$(grep -m1 "^summary:" $f | awk '{print $2}'); total=$((total + ir))
done
echo "$LABEL N=$N stream=$STREAM Ir=$total"
if [ -n "${KEEP:-}" ]; then cp $work/cg.* "$KEEP"/; fi
rm -rf "$work"
