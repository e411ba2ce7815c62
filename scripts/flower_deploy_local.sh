#!/usr/bin/env bash
# A real Flower deployment of FedKSeed on this machine: one SuperLink and N SuperNodes on 127.0.0.1, the app
# submitted with `flwr run`, and every process this script started stopped on exit, success or not.
#
#   scripts/flower_deploy_local.sh [--nodes N] [--port P] [--timeout S] [--secure] -- [main.py flags]
#   e.g. scripts/flower_deploy_local.sh --nodes 2 -- --model PATH --dataset dolly --data_path FILE \
#            --num_clients 4 -m 0.5 --rounds 2 --local_step 20 -K 1024 --output_dir runs/deploy --save --log
#
# Exit status 0 when the run finished (summary.json written in its --output_dir), 1 otherwise, 2 on bad flags.
#
# Default: INSECURE MODE: plain HTTP on 127.0.0.1 with --insecure: no TLS, no node authentication. Fine on
# loopback for a test; never like this across machines.
# --secure: a CA and a SuperLink certificate made for the run (cryptography), the SuperLink with TLS and
#   --enable-supernode-auth, every SuperNode with its own EC key pair registered with `flwr supernode register`,
#   the flwr CLI over TLS. The same flags across machines: see README (Flower: secure mode).
# The work folder (logs, keys, certificates, $FLWR_HOME with each node's state file) is printed at the end.
# Implementation: flower_app/deploy.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m flower_app.deploy "$@"
