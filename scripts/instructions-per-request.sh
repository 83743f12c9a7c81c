#!/usr/bin/env bash
# Instructions the gateway executes per request, counted by callgrind:
# a figure that repeats to within a fraction of a percent on a noisy,
# shared machine, where wall-clock and CPU time do not.
#
#   scripts/instructions-per-request.sh BIN [N=200] [KINDS="chat stream anthropic"]
#
# For each kind the gateway (BIN, a release build of any commit) runs under
# `valgrind --tool=callgrind` twice: 20 warm-up requests, then 0 or N more,
# one curl each (a new client connection per request, as curl does). The
# difference divided by N is what one request costs, start-up and warm-up
# excluded. Kinds:
#   chat       non-stream chat completion, 16 completion tokens
#   stream     streamed chat completion, 16 content chunks (+ role, finish, usage, [DONE])
#   anthropic  /v1/messages non-stream, translated to chat and back
# The simulator is SIM_BIN (default: target/release/switchyard of this
# checkout), outside valgrind. KEEP=DIR keeps the callgrind files of the N run.
set -euo pipefail
BIN=$1; N=${2:-200}; KINDS=${3:-"chat stream anthropic"}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIM=${SIM_BIN:-$ROOT/target/release/switchyard}
work=$(mktemp -d)
trap 'kill $SIMPID 2>/dev/null || true; rm -rf "$work"' EXIT

$SIM sim --listen 127.0.0.1:0 --models gpt-4o-mini --completion-tokens 16 > "$work/sim.out" 2>/dev/null &
SIMPID=$!
for _ in $(seq 100); do [ -s "$work/sim.out" ] && break; sleep 0.05; done
SIMURL=$(awk '{print $NF; exit}' "$work/sim.out")
cat > "$work/gw.toml" <<TOML
[server]
listen = "127.0.0.1:0"
auth = "none"
[providers.sim]
base_url = "$SIMURL"
[routes.chat-default]
targets = [{ provider = "sim", model = "gpt-4o-mini" }]
TOML

request() { # KIND GATEWAY
  local prompt='"messages":[{"role":"user","content":"Say hello to the load test."}],"max_tokens":16'
  case $1 in
    chat) curl -s -o /dev/null "$2/chat/completions" -H 'content-type: application/json' \
            -d '{"model":"chat-default",'"$prompt"',"stream":false}' ;;
    stream) curl -s -o /dev/null "$2/chat/completions" -H 'content-type: application/json' \
            -d '{"model":"chat-default",'"$prompt"',"stream":true}' ;;
    anthropic) curl -s -o /dev/null "${2%/v1}/v1/messages" -H 'content-type: application/json' \
            -H 'anthropic-version: 2023-06-01' -d '{"model":"chat-default",'"$prompt"'}' ;;
    *) echo "unknown kind $1" >&2; exit 2 ;;
  esac
}

# Instructions of one gateway run: 20 warm-up requests, then COUNT more.
run() { # KIND COUNT
  local out=$work/run-$1-$2
  mkdir -p "$out"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" \
    "$BIN" serve --config "$work/gw.toml" > "$out/gw.out" 2> "$out/gw.err" &
  local gw=$!
  for _ in $(seq 600); do [ -s "$out/gw.out" ] && break; sleep 0.1; done
  local url; url=$(awk '{print $NF; exit}' "$out/gw.out")
  for _ in $(seq 20); do request "$1" "$url"; done
  for _ in $(seq "$2"); do request "$1" "$url"; done
  kill -TERM $gw; wait $gw || true
  local total=0 ir
  for f in "$out"/cg.*; do
    ir=$(grep -m1 "^summary:" "$f" | awk '{print $2}'); total=$((total + ir))
  done
  if [ -n "${KEEP:-}" ] && [ "$2" != 0 ]; then mkdir -p "$KEEP/$1"; cp "$out"/cg.* "$KEEP/$1/"; fi
  echo "$total"
}

printf '%-10s %8s %16s %16s %14s\n' kind N "Ir (warm-up)" "Ir (warm-up + N)" "Ir per request"
for kind in $KINDS; do
  base=$(run "$kind" 0)
  full=$(run "$kind" "$N")
  printf '%-10s %8d %16d %16d %14d\n' "$kind" "$N" "$base" "$full" $(( (full - base) / N ))
done
