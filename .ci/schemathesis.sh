#!/usr/bin/env bash
# Checks the daemon against docs/openapi.yaml with schemathesis: no server
# errors, and every status, content type, header and JSON body as documented.
# The two streams (/ws, /events) are left out: an accepted stream never ends,
# so every generated request to them would only time out; tests/it/openapi.rs
# covers them.
set -euo pipefail
cd "$(dirname "$0")/.."

schemathesis_version=4.32.5
seconds="${SCHEMATHESIS_SECONDS:-60}"
venv=target/schemathesis-venv

if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q "$schemathesis_version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$schemathesis_version"
fi

cargo build --bin punctual
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
target/debug/punctual --listen "127.0.0.1:$port" >target/schemathesis-daemon.log 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true' EXIT

python3 - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/api/stats"
for _ in range(100):
    try:
        urllib.request.urlopen(url, timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("the daemon did not answer /api/stats within 10 s")
PY

"$venv/bin/schemathesis" run docs/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --exclude-path /ws --exclude-path /events \
  --max-examples 50 --max-time "$seconds" --request-timeout 5 --workers 1 \
  --seed "${SCHEMATHESIS_SEED:-20261201}"

# The daemon must have survived the run.
python3 -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=5)"
echo "schemathesis: the daemon kept to docs/openapi.yaml"
