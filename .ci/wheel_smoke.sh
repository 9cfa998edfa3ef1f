#!/usr/bin/env bash
# Wheel smoke test: build the wheel from the working tree, install it with the `jax` extra into a
# FRESH Python 3.12 venv, and train one small job through `kts serve` (embedded default: SQLite,
# file-system broker, embedded worker) from an empty folder. Passes only when the job succeeds,
# the server and its worker stop, and nothing but ./data appeared in that folder.
# Everything lives in one temporary folder, removed on exit. Set KEEP_SMOKE=1 to keep it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOB_TIMEOUT=${JOB_TIMEOUT:-120}

say() { echo "smoke: $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }

# A Python 3.12 that really runs (a pyenv shim can exist and still refuse).
PY312=""
for c in ${PY312_BIN:-} python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
  /usr/local/bin/python3.12 /usr/bin/python3.12; do
  if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
    PY312=$c
    break
  fi
done
[ -n "$PY312" ] || fail "no Python 3.12 found (set PY312_BIN)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kts-smoke.XXXXXX")
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    # The server runs in its own process group (setsid): take its worker down with it.
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${KEEP_SMOKE:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# 1. The wheel, built from a copy of the files git knows (tracked or not ignored) so that a stale
#    build/ folder or a deleted module in the checkout cannot end up in it.
say "building the wheel"
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/run"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
else
  cp -a "$ROOT/." "$WORK/src"
fi
# pip's output goes to a log, shown only when it fails.
quiet() { "$@" >>"$WORK/pip.log" 2>&1 || { tail -n 40 "$WORK/pip.log" >&2; fail "$*"; }; }
quiet "$PY312" -m pip wheel --no-deps "$WORK/src" -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/keras_training_service-*.whl)
say "built $(basename "$WHEEL")"

# 2. A fresh venv with the wheel and the jax extra (no TensorFlow there).
say "installing it with [jax] into a fresh $("$PY312" -V) venv"
"$PY312" -m venv "$WORK/venv"
quiet "$WORK/venv/bin/python" -m pip install --upgrade pip
quiet "$WORK/venv/bin/python" -m pip install "${WHEEL}[jax]"
PY="$WORK/venv/bin/python"
KTS="$WORK/venv/bin/kts"

# 3. Migrate and serve from an empty folder, with nothing of the checkout importable.
cd "$WORK/run"
unset PYTHONPATH KTS_DATABASE_URL KTS_BROKER_URL KTS_ARTIFACT_DIR
export KTS_DATA_DIR=./data
# Until the service has its own KTS_BACKEND setting, Keras is told directly: only JAX is here.
export KERAS_BACKEND=jax KTS_BACKEND=jax
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

say "kts migrate"
"$KTS" migrate

say "kts serve on port $PORT"
setsid "$KTS" serve --port "$PORT" --data-dir ./data >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# 4. One iris job, submitted and followed over HTTP.
set +e
"$PY" - "$PORT" "$JOB_TIMEOUT" <<'PY'
import json
import sys
import time
import urllib.error
import urllib.request

port, timeout = int(sys.argv[1]), float(sys.argv[2])
base = f"http://127.0.0.1:{port}"


def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


deadline = time.monotonic() + 60
while True:
    try:
        if call("GET", "/healthz")[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("smoke: the server did not answer /healthz within 60 s")
    time.sleep(0.5)

spec = {
    "dataset": {"builtin": "iris"},
    "epochs": 2,
    "model": {
        "layers": [
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    },
}
status, job = call("POST", "/v1/jobs", spec)
if status != 202:
    sys.exit(f"smoke: POST /v1/jobs answered {status}: {job}")
print(f"smoke: job {job['id']} queued", flush=True)
deadline = time.monotonic() + timeout
while True:
    status, job = call("GET", f"/v1/jobs/{job['id']}")
    state = job.get("status")
    if state == "succeeded":
        print(f"smoke: job succeeded (model {job.get('model_id')})", flush=True)
        break
    if status != 200 or state in ("failed", "cancelled"):
        sys.exit(f"smoke: job ended {state} ({status}): {json.dumps(job)[:2000]}")
    if time.monotonic() > deadline:
        sys.exit(f"smoke: job still {state} after {timeout:.0f} s")
    time.sleep(1)
PY
rc=$?
set -e
if [ "$rc" != 0 ]; then
  echo "--- last lines of the server log ---" >&2
  tail -n 60 "$WORK/server.log" >&2
  fail "training through the installed wheel"
fi

# 5. Stop the server: it must take its embedded worker down and exit on its own.
say "stopping the server"
kill -TERM "$SERVER_PID"
for _ in $(seq 1 45); do
  [ -z "$(ps -o pid= --sid "$SERVER_PID" 2>/dev/null)" ] && break
  sleep 1
done
if [ -n "$(ps -o pid= --sid "$SERVER_PID" 2>/dev/null)" ]; then
  ps -o pid,args --sid "$SERVER_PID" >&2 || true
  fail "processes of kts serve still running 45 s after SIGTERM"
fi
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

# 6. Nothing but ./data in the folder it ran in.
extra=$(ls -A | grep -vx data || true)
if [ -n "$extra" ]; then
  fail "kts created more than ./data in its working directory: $(echo "$extra" | tr '\n' ' ')"
fi
[ -f data/kts.sqlite ] || fail "no SQLite database under ./data"
say "ok: the wheel trains with JAX, and only ./data was created"
