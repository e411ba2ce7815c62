#!/usr/bin/env bash
# A real Flower deployment of FedKSeed on this machine: one SuperLink and N SuperNodes on 127.0.0.1, the app
# submitted with `flwr run`, and every process this script started stopped on exit (trap), success or not.
#
#   scripts/flower_deploy_local.sh [--nodes N] [--port P] [--timeout S] -- [main.py flags]
#   e.g. scripts/flower_deploy_local.sh --nodes 2 -- --model PATH --dataset dolly --data_path FILE \
#            --num_clients 4 -m 0.5 --rounds 2 --local_step 20 -K 1024 --output_dir runs/deploy --save --log
#
# Exit status 0 when the run finished (summary.json written in its --output_dir), 1 otherwise.
#
# INSECURE MODE: the SuperLink, the SuperNodes and the flwr CLI talk plain HTTP on 127.0.0.1 with --insecure:
# no TLS, no node authentication. Fine on loopback for a test; never like this across machines. For TLS:
#   flower-superlink --ssl-certfile server.pem --ssl-keyfile server.key --ssl-ca-certfile ca.pem   (no --insecure)
#   flower-supernode --root-certificates ca.pem --superlink HOST:PORT                               (no --insecure)
#   Flower config ($FLWR_HOME/config.toml): [superlink.NAME] address = "HOST:PORT", root-certificates = "ca.pem"
#     (instead of insecure = true)
# and for node authentication: flower-superlink --enable-supernode-auth, flower-supernode
#   --auth-supernode-private-key KEY --auth-supernode-public-key KEY.pub (keys registered with the SuperLink).
# In Flower 1.42 the Fleet and Control APIs are HTTP on the SuperLink's --host/--port (default 127.0.0.1:8000);
# every SuperNode also serves its own runtime API for its ClientApp processes on --port (here P+1+i).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NODES=2
PORT=18700
TIMEOUT=900
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--nodes N] [--port P] [--timeout S] -- [main.py flags]" >&2; exit 2 ;;
  esac
done
HOST=127.0.0.1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedkseed-flower.XXXXXX")"
export FLWR_HOME="$WORK/flwr_home"  # the CLI's config and the installed FABs stay inside $WORK
PIDS=()

cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do  # each started with setsid: its process group holds it and the processes it spawned
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  sleep 1
  for pid in "${PIDS[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  echo "stopped ${#PIDS[@]} process groups; logs in $WORK" >&2
  exit "$status"
}
trap cleanup EXIT INT TERM

# 1. the app folder and the run file (flags checked as main.py checks them)
OUT="$(cd "$ROOT" && python -m flower_app.stage "$WORK/app" "$WORK/flower_run.json" --nodes "$NODES" -- "$@")"
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "local-deployment"

[superlink.local-deployment]
address = "$HOST:$PORT"
insecure = true
EOF

# 2. the SuperLink (ServerApp runs in a subprocess it starts), then the SuperNodes
setsid flower-superlink --insecure --host "$HOST" --port "$PORT" --disable-runtime-dependency-installation \
  > "$WORK/superlink.log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < NODES; i++)); do
  setsid flower-supernode --insecure --superlink "$HOST:$PORT" --host "$HOST" --port "$((PORT + 1 + i))" \
    --node-config "partition-id=$i num-partitions=$NODES" > "$WORK/supernode-$i.log" 2>&1 &
  PIDS+=($!)
done

# 3. submit the run and follow it until the ServerApp writes its summary
submitted=0
for _ in $(seq 1 60); do  # the SuperLink accepts runs once it listens
  if flwr run "$WORK/app" local-deployment --run-config "flags-file='$WORK/flower_run.json'" \
      > "$WORK/flwr_run.log" 2>&1; then
    submitted=1
    break
  fi
  sleep 1
done
cat "$WORK/flwr_run.log" >&2
if ((!submitted)); then
  echo "error: flwr run could not submit the run (see above and $WORK/superlink.log)" >&2
  exit 1
fi
deadline=$((SECONDS + TIMEOUT))
while [[ ! -f "$OUT/summary.json" ]]; do
  if ((SECONDS > deadline)); then
    echo "error: the run did not finish within ${TIMEOUT}s (see $WORK/*.log and flwr log)" >&2
    exit 1
  fi
  if flwr ls local-deployment 2>/dev/null | grep -qi "finished:failed\|failed"; then
    echo "error: the run failed:" >&2
    flwr ls local-deployment >&2 || true
    exit 1
  fi
  sleep 2
done
flwr ls local-deployment >&2 || true
echo "run finished: $OUT" >&2
python - "$OUT/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
c = s.get("communication", {})
print(f"per client per round: {c.get('bytes_down_per_client_round', 0):.0f} B down + "
      f"{c.get('bytes_up_per_client_round', 0):.0f} B up (serialized messages; paper: < 18 KB); final {s['final']}")
EOF
