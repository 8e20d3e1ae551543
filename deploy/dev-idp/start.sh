#!/usr/bin/env bash
# Starts the development identity provider in the foreground.
#
# Installs Node.js/npm if missing, installs the locked npm dependencies when
# node_modules is missing or older than package-lock.json, then execs the server.
# The server prints one line "MH_IDP_ISSUER=http://127.0.0.1:<port>" on stdout and,
# if MH_IDP_READY_FILE is set, writes the same line to that file once it listens.
# See README.md in this folder for the environment variables.
set -euo pipefail

log() { printf 'dev-idp: %s\n' "$*" >&2; }

# A ready file left by an earlier run must not announce this one. A relative path is
# taken relative to the caller's working directory.
if [ -n "${MH_IDP_READY_FILE:-}" ]; then
  case "$MH_IDP_READY_FILE" in
    /*) ;;
    *) MH_IDP_READY_FILE="$PWD/$MH_IDP_READY_FILE" ;;
  esac
  export MH_IDP_READY_FILE
  rm -f -- "$MH_IDP_READY_FILE"
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing Node.js and npm"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq nodejs npm >&2
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  log "Node.js >= 20 is required (found $(node --version))"
  exit 1
fi

stamp="node_modules/.package-lock.sha256"
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ ! -d node_modules/oidc-provider ] || [ "$want" != "$have" ]; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  printf '%s\n' "$want" > "$stamp"
fi

if [ -n "${MH_IDP_INSTALL_ONLY:-}" ]; then exit 0; fi
exec node server.js
