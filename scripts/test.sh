#!/usr/bin/env bash
# Runs every test of the workspace against the real local services.
#
#   scripts/test.sh [extra nextest arguments, e.g. a filter]
#
# Without arguments it then runs scripts/fuzz-api.sh (MH_FUZZ=0 skips it).
#
# With CI=true the `ci` profile of .config/nextest.toml is used. Exits non-zero
# when any test fails.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$MH_ROOT"

bash scripts/ensure-services.sh
# The sign-in tests start the development identity provider many times in
# parallel; install its npm dependencies once, up front.
MH_IDP_INSTALL_ONLY=1 bash deploy/dev-idp/start.sh
# axe-core, which the browser tests inject into every page they visit.
if [[ ! -f control-plane/tests/a11y/node_modules/axe-core/axe.min.js ]]; then
    info "installing axe-core for the accessibility checks"
    npm ci --prefix control-plane/tests/a11y --no-audit --no-fund >&2
fi

args=(run --workspace --no-fail-fast)
if [[ ${CI:-} == true ]]; then
    args+=(--profile ci)
    # Compile-checked queries use the committed offline data in CI, so a
    # clean clone builds the same way everywhere.
    if [[ -d .sqlx ]]; then
        export SQLX_OFFLINE=true
    fi
fi

info "cargo nextest ${args[*]} $*"
status=0
cargo nextest "${args[@]}" "$@" || status=$?

# The API fuzzer (Schemathesis over the OpenAPI document, a real control
# plane, NUL bytes in its strings), after the test suites so that it never
# shares the machine with them. A filtered run (arguments given) or
# MH_FUZZ=0 skips it.
if [[ $# -eq 0 && ${MH_FUZZ:-1} != 0 ]]; then
    bash scripts/fuzz-api.sh || status=1
fi
exit $status
