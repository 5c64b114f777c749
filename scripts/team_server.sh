#!/usr/bin/env bash
# Start a team's MLflow tracking server on this machine: PostgreSQL (pgserver, data in ./tracking/postgres) and
# `mlflow server` with proxied artifacts (./tracking/artifacts), on 127.0.0.1:5000 unless told otherwise; it prints
# the MLFLOW_TRACKING_URI to give the team and runs until Ctrl-C, which stops both. Options are passed on:
#   scripts/team_server.sh --auth --host 0.0.0.0 --port 5000 --allowed_hosts mlflow.lab.example,10.0.0.7:5000   # a login: see README
#   scripts/team_server.sh --artifacts_destination s3://bucket/mlflow    # with MLFLOW_S3_ENDPOINT_URL and AWS_* set
#   scripts/team_server.sh --backend_store_uri postgresql://user:password@db-host/mlflow   # an existing database
# (python -m thread_bench.server --help lists them.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m thread_bench.server "$@"
