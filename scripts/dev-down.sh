#!/usr/bin/env bash
# Stops the control plane and workers that scripts/dev-up.sh started.
# PostgreSQL and MariaDB keep running (other projects may use them), and
# .dev/ is kept, so the next dev-up reuses its settings, data and tokens.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ! -d $MH_DEV_DIR ]] || ! compgen -G "$MH_DEV_DIR/*.pid" >/dev/null; then
    info "nothing to stop"
    exit 0
fi
dev_stop_all
info "stopped; settings and logs remain in .dev/"
