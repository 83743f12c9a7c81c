#!/usr/bin/env bash
# Checks the deployment files with the best tools the package registries
# offer, installing them when missing (a venv from PyPI kept in a cache
# directory; buildah and systemd from Debian):
#   Dockerfile     hadolint; then its runtime stage built offline with buildah
#                  from a host-built static binary (the build stage needs a
#                  Rust image from a registry this machine cannot reach), the
#                  image's config inspected, and the gateway run inside it:
#                  HEALTHCHECK command, a chat request through it, SIGTERM exit
#   Helm chart     rendered by Helm's Go engine (helm-python-sdk), linted,
#                  validated against the Kubernetes schemas (kubernetes-validate),
#                  its promises checked (scripts/check_helm.py), and the rendered
#                  config passed through `switchyard check-config`
#   systemd unit   `systemd-analyze verify`, and `systemd-analyze security`
#                  below an exposure of 2.0
# Idempotent; every step is bounded by `timeout`. CHECK_DEPLOY_IMAGE=0 skips
# the image build (and its static cargo build). .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -d "$work/storage" ]; then
    buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL $*" >&2; exit 1; }

echo "== tools"
requirements=scripts/check-deploy-requirements.txt
cache=${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-deploy-tools}
venv=$cache/venv-$(sha256sum "$requirements" | cut -c1-12)
if [ ! -x "$venv/bin/hadolint" ] || ! "$venv/bin/python" -c "import helm_python, kubernetes_validate" 2>/dev/null; then
  rm -rf "$venv" "$venv.partial"
  mkdir -p "$cache"
  python3 -m venv "$venv.partial"
  timeout 600 "$venv.partial/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  mv "$venv.partial" "$venv"
fi
missing_debs=()
command -v systemd-analyze >/dev/null || missing_debs+=(systemd)
if [ "${CHECK_DEPLOY_IMAGE:-1}" != 0 ]; then command -v buildah >/dev/null || missing_debs+=(buildah); fi
if [ ${#missing_debs[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq
  timeout 600 apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi
"$venv/bin/hadolint" --version
"$venv/bin/python" -c "import helm_python as h, kubernetes_validate as k; print('helm engine', h.helm_sdk_version(), '/ kubernetes-validate', k.__version__)"
systemd-analyze --version | head -n1

# The binary every check runs: the static build the image needs (as the
# Dockerfile's build stage makes it: glibc crt-static, explicit target), or
# without the image step the ordinary release build CI already has.
gateway_binary() {
  if [ "${CHECK_DEPLOY_IMAGE:-1}" != 0 ]; then
    local target=x86_64-unknown-linux-gnu
    RUSTFLAGS='-C target-feature=+crt-static' timeout 1800 \
      cargo build --release --locked --quiet --target "$target" --bin switchyard >&2
    echo "target/$target/release/switchyard"
  else
    [ -x target/release/switchyard ] || timeout 1800 cargo build --release --locked --quiet --bin switchyard >&2
    echo target/release/switchyard
  fi
}

echo "== hadolint Dockerfile"
"$venv/bin/hadolint" Dockerfile
echo "ok"

echo "== Helm chart deploy/helm/switchyard"
timeout 120 "$venv/bin/python" scripts/check_helm.py deploy/helm/switchyard "$work/helm.toml"
switchyard=$(gateway_binary)
OPENAI_API_KEY=dummy SWITCHYARD_ADMIN_KEY=0123456789abcdef0123456789abcdef \
  "$switchyard" check-config "$work/helm.toml"

echo "== systemd unit deploy/systemd/switchyard.service"
# `verify` wants the unit's executables and the system's units: a scratch
# root holding them, so nothing is installed on this machine.
root=$work/root
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp "$switchyard" "$root/usr/local/bin/switchyard"
cp /bin/kill "$root/bin/kill"
cp -r /lib/systemd/system "$root/usr/lib/systemd/"
cp deploy/systemd/switchyard.service "$root/etc/systemd/system/"
out=$(timeout 60 systemd-analyze verify --root="$root" switchyard.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
echo "ok (verify: no warnings)"
timeout 60 systemd-analyze security --offline=yes --root="$root" --threshold=20 switchyard.service |
  grep -- "Overall exposure level" || fail "systemd-analyze security: exposure above 2.0"

if [ "${CHECK_DEPLOY_IMAGE:-1}" = 0 ]; then
  echo "== image build skipped (CHECK_DEPLOY_IMAGE=0)"
  exit 0
fi

static=$switchyard
if readelf -d "$static" | grep -q NEEDED; then fail "$static links shared libraries"; fi
echo "== image: $static is static ($(du -h "$static" | cut -f1), no shared libraries)"

echo "== image: the Dockerfile's runtime stage, built with buildah"
context=$work/context
mkdir -p "$context"
sh deploy/docker/rootfs.sh "$static" /etc/ssl/certs/ca-certificates.crt "$context/image"
{
  echo "FROM scratch AS build"
  echo "COPY image/ /image/"
  sed -n '/^FROM scratch AS runtime/,$p' Dockerfile
} >"$context/Containerfile"
grep -q "^FROM scratch AS runtime" "$context/Containerfile" || fail "Dockerfile has no 'FROM scratch AS runtime' stage"
bah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
timeout 300 "${bah[@]}" bud --quiet --isolation chroot --format docker -t switchyard:check "$context" >/dev/null
"${bah[@]}" inspect --type image switchyard:check | python3 -c '
import json, sys
config = json.load(sys.stdin)["Docker"]["config"]
want = {
    "User": "65532:65532",
    "StopSignal": "SIGTERM",
    "WorkingDir": "/var/lib/switchyard",
    "ExposedPorts": {"8080/tcp": {}},
    "Entrypoint": ["/usr/local/bin/switchyard"],
}
wrong = {k: config.get(k) for k, v in want.items() if config.get(k) != v}
health = (config.get("Healthcheck") or {}).get("Test", [])
if health[:3] != ["CMD", "/usr/local/bin/switchyard", "healthcheck"]:
    wrong["Healthcheck"] = health
sys.exit(f"image config: {wrong}" if wrong else 0)
' || fail "the image config is not what the Dockerfile says"
echo "ok ($("${bah[@]}" images --format '{{.Size}}' switchyard:check), non-root, HEALTHCHECK, STOPSIGNAL SIGTERM)"

echo "== image: the gateway run inside it"
# The upstream is a simulator on the host (same network namespace); the
# config names it as `localhost`, so the static glibc's resolver is used.
"$switchyard" sim --listen 127.0.0.1:0 --models gpt-4o --name upstream >"$work/sim.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/sim.out" ] && break; sleep 0.05; done
sim_url=$(awk '{print $NF; exit}' "$work/sim.out")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/etc"
cat >"$work/etc/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
auth = "none"
[providers.sim]
base_url = "${sim_url/127.0.0.1/localhost}"
[routes.chat-default]
targets = [{ provider = "sim", model = "gpt-4o" }]
# The default SQLite store, relative to the image's working directory: the
# gateway must be able to create it there as the image's user.
[request_log]
enabled = true
TOML
chmod -R a+rX "$work/etc"
container=$("${bah[@]}" from switchyard:check)
run=("${bah[@]}" run --isolation chroot -v "$work/etc:/etc/switchyard:ro" "$container" --)
"${run[@]}" /usr/local/bin/switchyard serve --config /etc/switchyard/switchyard.toml \
  >"$work/gw.out" 2>"$work/gw.err" &
gateway=$!
pids+=($gateway)
for _ in $(seq 1 100); do [ -s "$work/gw.out" ] && break; sleep 0.1; done
[ -s "$work/gw.out" ] || fail "the gateway did not start in the image: $(cat "$work/gw.err")"
timeout 30 "${run[@]}" /usr/local/bin/switchyard healthcheck --url "http://127.0.0.1:$port/healthz"
code=$(curl -s -o "$work/reply" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/v1/chat/completions" \
  -H 'content-type: application/json' -d '{"model":"chat-default","messages":[{"role":"user","content":"hi"}]}')
[ "$code" = 200 ] || fail "chat through the image: $code $(cat "$work/reply")"
echo "ok (chat completion through the gateway in the image: 200, request log in /var/lib/switchyard)"
# `buildah run` does not pass signals on (it kills its child): signal the
# gateway itself, the last of buildah's chain of child processes.
inner=$gateway
while child=$(ps -o pid= --ppid "$inner" | head -n1 | tr -d ' ') && [ -n "$child" ]; do inner=$child; done
[ "$(cat "/proc/$inner/comm")" = switchyard ] || fail "no gateway process under buildah ($inner)"
uid=$(awk '/^Uid:/ {print $2}' "/proc/$inner/status")
[ "$uid" = 65532 ] || fail "the gateway in the image runs as uid $uid, not 65532"
kill -TERM "$inner"
status=0
timeout 60 tail --pid="$gateway" -f /dev/null || fail "the gateway in the image did not exit after SIGTERM"
wait "$gateway" || status=$?
[ "$status" = 0 ] || fail "the gateway in the image exited $status after SIGTERM: $(tail -n3 "$work/gw.err")"
echo "ok (SIGTERM: drained and exited 0)"
