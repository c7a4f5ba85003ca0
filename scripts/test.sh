#!/usr/bin/env bash
# Runs every check and test of Switchboard: formatting, lints, unit, property
# and integration tests (real Redis, real Prometheus), the alert rules and the
# dashboard, the Helm chart (offline), and the browser end-to-end test.
# Installs what it needs when it is missing, so it passes on a fresh machine.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- tools -------------------------------------------------------------------
ensure_rust_component() {
  if ! cargo "$1" --version >/dev/null 2>&1; then
    step "installing rust component $2"
    rustup component add "$2"
  fi
}
ensure_rust_component fmt rustfmt
ensure_rust_component clippy clippy

# Debian packages the tests run for real (each test starts its own instances).
apt_updated=
ensure_package() { # command package [apt-get options...]
  command -v "$1" >/dev/null 2>&1 && return
  step "installing $2"
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${@:3}" "$2"
}
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
ensure_package redis-server redis-server
# prometheus and promtool (the tests start their own Prometheus on loopback).
ensure_package promtool prometheus --no-install-recommends
ensure_package node nodejs
ensure_package npm npm

# --- checks ------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

# --- deployment artefacts ----------------------------------------------------
step "alert rules (promtool) and Grafana dashboard"
deploy/prometheus/check.sh

step "Helm chart (offline: helm lint/template, kubernetes-validate, assertions)"
deploy/helm/test.sh

# --- browser end-to-end ------------------------------------------------------
ensure_package chromium chromium

step "browser end-to-end"
cargo build --locked
npm ci --prefix services/switchboard/tests/browser --no-audit --no-fund
node services/switchboard/tests/browser/e2e.mjs
