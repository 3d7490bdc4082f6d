#!/usr/bin/env bash
# The worker end to end on the local test bed (make demo):
#   1. starts the bed (kube-apiserver + controllers + kwok + redis: testbed/bed.py),
#   2. starts example/webhook-receiver.py (verifying signatures),
#   3. starts the worker (cargo build) against the bed's Redis list,
#   4. enqueues example/seed-002.json, example/failing.json and
#      example/invalid.json with `k8s-job-worker enqueue -`,
#   5. prints the callbacks as they arrive, then tears everything down.
# Needs the test-bed binaries and venv (make testbed; cached after the first time).
# DEMO_TIMEOUT (default 120) bounds the wait for the three terminal callbacks;
# DEMO_WORKER=PATH runs that binary instead of a debug build (e.g. the static one).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TIMEOUT=${DEMO_TIMEOUT:-120}
T=$(mktemp -d "${TMPDIR:-/tmp}/k8s-job-worker-demo.XXXXXX")
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

BED_PID= RECV_PID= WORKER_PID= TAIL_PID=
cleanup() {
  local rc=$?
  set +e
  [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
  if [ -n "$WORKER_PID" ] && kill -0 "$WORKER_PID" 2>/dev/null; then
    say "stopping the worker (SIGTERM)"
    kill -TERM "$WORKER_PID"; wait "$WORKER_PID" 2>/dev/null
  fi
  [ -n "$RECV_PID" ] && { kill "$RECV_PID" 2>/dev/null; wait "$RECV_PID" 2>/dev/null; }
  if [ -n "$BED_PID" ]; then
    say "stopping the test bed"
    exec 3>&-            # bed.py tears down when its stdin closes
    wait "$BED_PID" 2>/dev/null
  fi
  if [ "$rc" != 0 ]; then
    echo "demo failed (exit $rc); worker log:" >&2
    tail -n 30 "$T/worker.log" 2>/dev/null >&2
    echo "bed log:" >&2; tail -n 15 "$T/bed.err" 2>/dev/null >&2
  fi
  rm -rf "$T"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prerequisites
command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install -y redis-server" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl missing: apt-get install -y curl" >&2; exit 1; }
PY=${TESTBED_PYTHON:-$(bash testbed/venv.sh)}
BIN=${TESTBED_BIN:-$(bash testbed/build.sh | tail -n1)}
if [ -n "${DEMO_WORKER:-}" ]; then   # e.g. the static binary of `make static`
  WORKER=$DEMO_WORKER
else
  say "building the worker"
  cargo build --quiet --bin k8s-job-worker
  WORKER="${CARGO_TARGET_DIR:-$ROOT/target}/debug/k8s-job-worker"
fi

# ---- 1. the bed: one JSON line on stdout, alive while fd 3 is open
say "starting the test bed"
mkfifo "$T/bed.in"
"$PY" testbed/bed.py --bin "$BIN" <"$T/bed.in" >"$T/bed.json" 2>"$T/bed.err" &
BED_PID=$!
exec 3>"$T/bed.in"
for _ in $(seq 1 1200); do
  [ -s "$T/bed.json" ] && break
  kill -0 "$BED_PID" 2>/dev/null || { cat "$T/bed.err" >&2; echo "the bed failed to start" >&2; exit 1; }
  sleep 0.1
done
[ -s "$T/bed.json" ] || { echo "the bed did not start within 120 s" >&2; exit 1; }
bed() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/bed.json" "$1"; }
API=$(bed api_url) CA=$(bed ca_file) TOKEN_FILE=$(bed admin_token_file) REDIS_PORT=$(bed redis_port)
echo "    API server $API, Redis 127.0.0.1:$REDIS_PORT" >&2

kube() { # METHOD PATH [JSON]
  curl -sS --fail-with-body --cacert "$CA" -H "Authorization: Bearer $(cat "$TOKEN_FILE")" \
    -H 'Content-Type: application/json' -X "$1" "$API$2" ${3:+-d "$3"} >/dev/null
}
WNS=k8s-job-worker JNS=jobs
for ns in "$WNS" "$JNS"; do
  kube POST /api/v1/namespaces "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}"
done
# The seed's volume: a PV bound to PVC ps-pvc (the seed's node k8s-node-1 is one of the bed's).
kube POST /api/v1/persistentvolumes '{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"demo-pv"},
  "spec":{"capacity":{"storage":"1Gi"},"accessModes":["ReadWriteOnce"],"hostPath":{"path":"/tmp/pv"},
  "claimRef":{"namespace":"'$JNS'","name":"ps-pvc"},"persistentVolumeReclaimPolicy":"Retain"}}'
kube POST /api/v1/namespaces/$JNS/persistentvolumeclaims '{"apiVersion":"v1","kind":"PersistentVolumeClaim",
  "metadata":{"name":"ps-pvc"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}},
  "volumeName":"demo-pv","storageClassName":""}}'
for _ in $(seq 1 300); do   # job pods need the namespace's default ServiceAccount
  kube GET /api/v1/namespaces/$JNS/serviceaccounts/default 2>/dev/null && break; sleep 0.1
done

# ---- 2. the webhook receiver, verifying Standard Webhooks signatures
SECRET="whsec_$("$PY" -c 'import base64,os; print(base64.b64encode(os.urandom(24)).decode())')"
WEBHOOK_SIGNING_SECRET=$SECRET python3 example/webhook-receiver.py 0 >"$T/callbacks.log" 2>"$T/receiver.err" &
RECV_PID=$!
for _ in $(seq 1 50); do grep -q listening "$T/receiver.err" 2>/dev/null && break; sleep 0.1; done
HOOK=$(grep -o 'http://[0-9.:]*' "$T/receiver.err")
say "webhook receiver on $HOOK"

# ---- 3. the worker
HTTP_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export QUEUE_TYPE=redis REDIS_ENDPOINT=127.0.0.1:$REDIS_PORT REDIS_JOB_KEY_PREFIX=demo-
env -i PATH="$PATH" RUST_LOG=info \
  KUBE_API_URL="$API" KUBE_CA_FILE="$CA" KUBE_TOKEN_FILE="$TOKEN_FILE" \
  POD_NAME=k8s-job-worker-demo-0 POD_NAMESPACE=$WNS ALLOWED_NAMESPACES=$JNS \
  QUEUE_TYPE=redis REDIS_ENDPOINT="$REDIS_ENDPOINT" REDIS_JOB_KEY_PREFIX=demo- \
  HTTP_SERVER_PORT="$HTTP_PORT" POLLING_INTERVAL=1 CALLBACK_BACKOFF_MAX=2 \
  WEBHOOK_SIGNING_SECRET="$SECRET" \
  ALLOWED_ENV_REFS=configmap/busybox-default ALLOWED_PVCS=ps-pvc \
  "$WORKER" run >"$T/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$WORKER_PID" 2>/dev/null || { echo "the worker exited" >&2; exit 1; }
  sleep 0.1
done
say "worker ready on http://127.0.0.1:$HTTP_PORT"

# ---- 4. the messages
msg() { # FILE [PYTHON STATEMENT ON m]: the example for this bed's namespace and receiver
  "$PY" -c '
import json, sys
m = json.load(open(sys.argv[1]))
m["job"]["namespace"] = sys.argv[2]
m.setdefault("webhook", {})["url"] = sys.argv[3] + "/callbacks/" + m["id"]
if sys.argv[4]:
    exec(sys.argv[4])
print(json.dumps(m))' "$1" "$JNS" "$HOOK" "${2:-}"
}
say "enqueueing seed-002.json, failing.json and invalid.json on the Redis list demo-queue"
printf '%-12s  %-36s  %s\n' "time" "message id" "status / detail"
tail -n +1 -f "$T/callbacks.log" &
TAIL_PID=$!
msg example/seed-002.json | "$WORKER" enqueue - >/dev/null
# kwok's test stages read this pod label (job.fargate becomes one): the container exits 1.
msg example/failing.json 'm["job"]["fargate"] = {"key": "testbed.k8s-job-worker.io/outcome", "value": "fail"}' \
  | "$WORKER" enqueue - >/dev/null
msg example/invalid.json | "$WORKER" enqueue - >/dev/null

# ---- 5. until every message has its terminal callback (2, 3, 99)
deadline=$((SECONDS + TIMEOUT))
terminal() { grep -cE '^[0-9:.]+  [^ ]+ +(2|3|99) ' "$T/callbacks.log" || true; }
while [ "$(terminal)" -lt 3 ]; do
  [ $SECONDS -lt $deadline ] || { echo "only $(terminal) of 3 terminal callbacks after ${TIMEOUT} s" >&2; exit 1; }
  kill -0 "$WORKER_PID" 2>/dev/null || { echo "the worker exited" >&2; exit 1; }
  sleep 0.2
done
sleep 0.3
kill "$TAIL_PID" 2>/dev/null; wait "$TAIL_PID" 2>/dev/null || true; TAIL_PID=
echo >&2
say "what the worker knows of the seed message (GET /jobs/{id}):"
curl -s "http://127.0.0.1:$HTTP_PORT/jobs/31a89a91-43d8-4786-a195-9b25cec28a44"; echo
say "a few metrics:"
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" \
  | grep -E '^job_worker_(messages_(received|acknowledged|rejected)_total|jobs_(created|finished)_total|callbacks_sent_total|leader)' || true
if grep -q REJECTED "$T/callbacks.log"; then
  echo "some callbacks failed signature verification" >&2; exit 1
fi
say "done"
