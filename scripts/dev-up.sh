#!/usr/bin/env bash
# Brings up a complete local instance of migrate-hub from a fresh clone:
#
#   1. PostgreSQL and MariaDB checked (installed and started when needed);
#   2. the workspace built (debug);
#   3. settings generated once into .dev/env (tool database URL, a fresh
#      encryption key, listen address);
#   4. the tool database created and migrated;
#   5. the control plane and one worker per pool started in the background
#      (processes from an earlier run are stopped first);
#   6. demo accounts (admin, manager, user) and an API token for each;
#   7. demo data seeded through the JSON API: a project with three PostgreSQL
#      targets and a few migrations, and a MariaDB project with one target.
#
# Running it again is safe: it restarts the processes and skips what exists.
#
# Settings: MH_DEV_PORT (default 8080) changes the port of the control plane.
# Everything lives in .dev/ (ignored by git); scripts/dev-down.sh stops it.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$MH_ROOT"

ENV_FILE="$MH_DEV_DIR/env"
CONTROL_PLANE="$MH_ROOT/target/debug/control-plane"
WORKER="$MH_ROOT/target/debug/worker"
# One worker process per pool; every demo target uses `default`.
WORKER_POOLS=(default)
WORKER_CONCURRENCY=4
# The first worker's metrics port; each further pool takes the next one.
METRICS_PORT=${MH_DEV_METRICS_PORT:-9101}
READY_TIMEOUT=${MH_DEV_READY_TIMEOUT:-60}

# email role display-name
ACCOUNTS=(
    "admin@example.com admin Ada Admin"
    "manager@example.com manager Max Manager"
    "manager2@example.com manager Mia Manager"
    "user@example.com user Uma User"
)

# --- settings ----------------------------------------------------------------------

write_env_once() {
    if [[ -f $ENV_FILE ]]; then
        return 0
    fi
    local port=${MH_DEV_PORT:-8080}
    info "writing $ENV_FILE (generated once; keep it: it holds the encryption key)"
    (
        umask 077
        cat >"$ENV_FILE" <<EOF
# Local development settings, written once by scripts/dev-up.sh.
# Edit freely. Keep MH_ENCRYPTION_KEYS: target passwords saved under it cannot
# be decrypted with another key. See .env.example for every setting.
MH_DATABASE_URL=postgres://$MH_PG_SUPERUSER@$MH_PG_HOST:$MH_PG_PORT/migrate_hub
MH_ENCRYPTION_KEYS=k1:$(head -c 64 /dev/urandom | base64 -w0)
MH_LISTEN=127.0.0.1:$port
MH_PUBLIC_URL=http://127.0.0.1:$port
MH_LOG_FORMAT=text
RUST_LOG=info,sqlx=warn
# Browser sign-in through the development identity provider (deploy/dev-idp),
# which dev-up starts on this port. Every demo password is "demo".
MH_OIDC_ISSUER=http://127.0.0.1:${MH_DEV_IDP_PORT:-8081}
MH_OIDC_CLIENT_ID=migrate-hub-dev
MH_OIDC_CLIENT_SECRET=dev-secret
MH_ALLOWED_DOMAINS=example.com
MH_PROVISIONING=off
EOF
    )
}

# MH_DEV_PORT on a later run moves an existing instance to another port.
apply_port_override() {
    [[ -n ${MH_DEV_PORT:-} ]] || return 0
    [[ $MH_DEV_PORT =~ ^[0-9]+$ ]] || die "MH_DEV_PORT must be a port number, got '$MH_DEV_PORT'"
    sed -i \
        -e "s|^MH_LISTEN=.*|MH_LISTEN=127.0.0.1:$MH_DEV_PORT|" \
        -e "s|^MH_PUBLIC_URL=.*|MH_PUBLIC_URL=http://127.0.0.1:$MH_DEV_PORT|" \
        "$ENV_FILE"
}

load_env() {
    set -a
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    set +a
    : "${MH_DATABASE_URL:?MH_DATABASE_URL missing in $ENV_FILE}"
    : "${MH_ENCRYPTION_KEYS:?MH_ENCRYPTION_KEYS missing in $ENV_FILE}"
    MH_LISTEN=${MH_LISTEN:-127.0.0.1:8080}
    MH_PUBLIC_URL=${MH_PUBLIC_URL:-http://$MH_LISTEN}
    export MH_LISTEN MH_PUBLIC_URL
    # The API is always reached over loopback, whatever address it binds.
    HTTP_PORT=${MH_LISTEN##*:}
    BASE_URL="http://127.0.0.1:$HTTP_PORT"
}

# The database name at the end of MH_DATABASE_URL (without query parameters).
tool_database_name() {
    local name=${MH_DATABASE_URL##*/}
    echo "${name%%\?*}"
}

# --- processes ---------------------------------------------------------------------

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_background NAME LOG COMMAND...: detached from this shell's session, so
# it outlives the script and a Ctrl-C here; pid in .dev/NAME.pid.
start_background() {
    local name=$1 log=$2
    shift 2
    printf '\n=== %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$log"
    setsid "$@" </dev/null >>"$log" 2>&1 &
    echo $! >"$MH_DEV_DIR/$name.pid"
}

readyz_ok() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE_URL/readyz") == 200 ]]
}

# Waits for /readyz while making sure the process is still alive, so a crash
# at start-up is reported at once with the end of its log.
wait_for_control_plane() {
    local log=$1 deadline=$((SECONDS + READY_TIMEOUT))
    until readyz_ok; do
        if ! pid_alive "$MH_DEV_DIR/control-plane.pid" "$CONTROL_PLANE"; then
            tail -n 30 "$log" >&2 || true
            die "the control plane exited during start-up (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$log" >&2 || true
            die "GET $BASE_URL/readyz did not answer 200 within ${READY_TIMEOUT}s (log: $log)"
        fi
        sleep 0.2
    done
}

# A worker registers itself in the tool database once it is connected.
worker_registered() {
    local pid=$1
    [[ $(psql -X -w -At "$MH_DATABASE_URL" -c \
        "SELECT 1 FROM workers WHERE pid = $pid AND stopped_at IS NULL LIMIT 1" 2>/dev/null) == 1 ]]
}

wait_for_worker() {
    local pool=$1 log=$2 pidfile="$MH_DEV_DIR/worker-$1.pid" deadline=$((SECONDS + READY_TIMEOUT)) pid
    pid=$(<"$pidfile")
    until worker_registered "$pid"; do
        if ! pid_alive "$pidfile" "$WORKER"; then
            tail -n 30 "$log" >&2 || true
            die "the worker of pool $pool exited during start-up (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            warn "the worker of pool $pool runs but has not registered within ${READY_TIMEOUT}s (log: $log)"
            return 0
        fi
        sleep 0.2
    done
}

# The development identity provider, when .dev/env points sign-in at it.
start_identity_provider() {
    [[ ${MH_OIDC_ISSUER:-} =~ ^http://127\.0\.0\.1:([0-9]+)$ ]] || return 0
    local port=${BASH_REMATCH[1]} ready="$MH_DEV_DIR/dev-idp.ready" log="$MH_DEV_DIR/dev-idp.log"
    if port_in_use "$port"; then
        die "port $port (identity provider) is taken; set MH_DEV_IDP_PORT in a fresh .dev/env or free the port"
    fi
    info "starting the development identity provider on $MH_OIDC_ISSUER"
    rm -f "$ready"
    MH_IDP_PORT=$port MH_IDP_READY_FILE=$ready MH_IDP_REDIRECT_URIS="$MH_PUBLIC_URL/auth/callback" \
        start_background dev-idp "$log" bash deploy/dev-idp/start.sh
    local deadline=$((SECONDS + READY_TIMEOUT))
    until [[ -s $ready ]]; do
        if ((SECONDS >= deadline)); then
            tail -n 30 "$log" >&2 || true
            die "the identity provider did not start within ${READY_TIMEOUT}s (log: $log)"
        fi
        sleep 0.2
    done
}

start_processes() {
    dev_stop_all
    if port_in_use "$HTTP_PORT"; then
        die "port $HTTP_PORT is taken by another program; run again with MH_DEV_PORT=<free port>"
    fi

    start_identity_provider

    local log="$MH_DEV_DIR/control-plane.log"
    info "starting the control plane on $BASE_URL"
    start_background control-plane "$log" "$CONTROL_PLANE" serve
    wait_for_control_plane "$log"

    local i=0 pool
    for pool in "${WORKER_POOLS[@]}"; do
        log="$MH_DEV_DIR/worker-$pool.log"
        info "starting a worker for pool $pool"
        MH_METRICS_LISTEN="127.0.0.1:$((METRICS_PORT + i))" \
            start_background "worker-$pool" "$log" \
            "$WORKER" --pool "$pool" --concurrency "$WORKER_CONCURRENCY"
        wait_for_worker "$pool" "$log"
        i=$((i + 1))
    done
}

# --- accounts and tokens -------------------------------------------------------------

token_works() {
    [[ -s $1 ]] || return 1
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        -H "Authorization: Bearer $(<"$1")" "$BASE_URL/api/v1/me") == 200 ]]
}

ensure_accounts() {
    local entry email role name file token
    for entry in "${ACCOUNTS[@]}"; do
        read -r email role name <<<"$entry"
        "$CONTROL_PLANE" user add --email "$email" --role "$role" --name "$name" >/dev/null \
            || die "control-plane user add --email $email failed"
        # Reuse a token from an earlier run while it still works, so that
        # re-running does not pile up tokens.
        file="$MH_DEV_DIR/token-${email%%@*}"
        if ! token_works "$file"; then
            token=$("$CONTROL_PLANE" token create --email "$email" --name dev-up --expires-in-days 30) \
                || die "control-plane token create --email $email failed"
            token=${token//[[:space:]]/}
            [[ -n $token ]] || die "control-plane token create printed no token"
            (umask 077 && printf '%s\n' "$token" >"$file")
            token_works "$file" || die "the new API token for $email is refused by GET /api/v1/me"
        fi
    done
    TOKEN=$(<"$MH_DEV_DIR/token-admin")
}

# --- the JSON API ---------------------------------------------------------------------

RESPONSE="$MH_DEV_DIR/last-response.json"
SEED_PROBLEMS=0

# api METHOD PATH [JSON]: prints the status code; the body is left in $RESPONSE.
api() {
    local method=$1 path=$2 body=${3:-}
    local args=(-s -o "$RESPONSE" -w '%{http_code}' --max-time 30 -X "$method"
        -H "Authorization: Bearer $TOKEN" -H 'Accept: application/json')
    if [[ -n $body ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    curl "${args[@]}" "$BASE_URL$path" || echo 000
}

# The error message of the last response, for notes.
api_error() {
    json_get error message <"$RESPONSE" 2>/dev/null || head -c 300 "$RESPONSE" 2>/dev/null || true
}

seed_problem() {
    warn "$*"
    SEED_PROBLEMS=$((SEED_PROBLEMS + 1))
}

# The id of the item named NAME in the list in $RESPONSE (`{"items": [...]}` or a bare list).
id_of_named_item() {
    python3 -c '
import json, sys
body = json.load(open(sys.argv[1]))
items = body.get("items", []) if isinstance(body, dict) else body
for item in items:
    if item.get("name") == sys.argv[2]:
        print(item["id"])
        sys.exit(0)
sys.exit(1)
' "$RESPONSE" "$1"
}

ensure_project() {
    local slug=$1 body=$2 status
    status=$(api GET "/api/v1/projects/$slug")
    [[ $status == 200 ]] && return 0
    status=$(api POST /api/v1/projects "$body")
    case $status in
    201) info "created project $slug" ;;
    409) ;;
    *) seed_problem "creating project $slug: HTTP $status: $(api_error)" && return 1 ;;
    esac
}

# ensure_db_set SLUG NAME ENVIRONMENT: sets DB_SET_ID. (A global rather than
# output, so that the problem counter is not lost in a command substitution.)
ensure_db_set() {
    local slug=$1 name=$2 environment=$3 status
    DB_SET_ID=''
    status=$(api GET "/api/v1/projects/$slug/db-sets")
    if [[ $status == 200 ]] && DB_SET_ID=$(id_of_named_item "$name"); then
        return 0
    fi
    status=$(api POST "/api/v1/projects/$slug/db-sets" "{\"name\":\"$name\",\"environment\":\"$environment\"}")
    case $status in
    201)
        info "created DB set $slug/$name ($environment)"
        DB_SET_ID=$(json_get id <"$RESPONSE") || true
        ;;
    409)
        api GET "/api/v1/projects/$slug/db-sets" >/dev/null
        DB_SET_ID=$(id_of_named_item "$name") || true
        ;;
    *)
        seed_problem "creating DB set $slug/$name: HTTP $status: $(api_error)"
        return 1
        ;;
    esac
    [[ -n $DB_SET_ID ]] || { seed_problem "DB set $slug/$name: no id in the API's answer" && return 1; }
}

# ensure_target SLUG SET_ID NAME JSON. Returns 2 when the API refuses the
# target as invalid (422), so callers can tell "not supported" from "broken".
ensure_target() {
    local slug=$1 set_id=$2 name=$3 body=$4 status
    status=$(api GET "/api/v1/projects/$slug/db-sets/$set_id/targets")
    if [[ $status == 200 ]] && id_of_named_item "$name" >/dev/null; then
        return 0
    fi
    status=$(api POST "/api/v1/projects/$slug/db-sets/$set_id/targets" "$body")
    case $status in
    201) info "created target $name" ;;
    409) ;;
    422) return 2 ;;
    *) seed_problem "creating target $name: HTTP $status: $(api_error)" && return 1 ;;
    esac
}

ensure_migration() {
    local slug=$1 version=$2 body=$3 status
    status=$(api GET "/api/v1/projects/$slug/migrations/$version")
    [[ $status == 200 ]] && return 0
    status=$(api POST "/api/v1/projects/$slug/migrations" "$body")
    case $status in
    201) info "created migration $slug $version" ;;
    409) ;;
    *) seed_problem "creating migration $slug $version: HTTP $status: $(api_error)" && return 1 ;;
    esac
}

# --- demo data ------------------------------------------------------------------------

seed_postgres_demo() {
    local i rc
    for i in 1 2 3; do
        pg_create_database "mh_demo_pg_$i"
    done

    ensure_project demo '{"slug":"demo","name":"Demo shop","description":"A small shop schema on three PostgreSQL databases, to try requesting, approving and executing runs."}' \
        || return 0

    if ensure_db_set demo demo-pg daily; then
        for i in 1 2 3; do
            rc=0
            ensure_target demo "$DB_SET_ID" "pg-$i" "{\"name\":\"pg-$i\",\"engine\":\"postgres\",\"host\":\"$MH_PG_HOST\",\"port\":$MH_PG_PORT,\"database\":\"mh_demo_pg_$i\",\"username\":\"$MH_PG_SUPERUSER\",\"password\":\"\",\"tls_mode\":\"disable\",\"worker_pool\":\"default\"}" \
                || rc=$?
            if ((rc == 2)); then
                seed_problem "the API refused PostgreSQL target pg-$i: $(api_error)"
            fi
        done
    fi

    ensure_migration demo 1 '{"version":"1","name":"create customers","up_sql":"CREATE TABLE customers (\n    id bigserial PRIMARY KEY,\n    email text NOT NULL UNIQUE\n);\n","down_sql":"DROP TABLE customers;\n"}' || true
    ensure_migration demo 2 '{"version":"2","name":"create orders","up_sql":"CREATE TABLE orders (\n    id bigserial PRIMARY KEY,\n    customer_id bigint NOT NULL REFERENCES customers (id),\n    total_cents bigint NOT NULL CHECK (total_cents >= 0),\n    created_at timestamptz NOT NULL DEFAULT now()\n);\n","down_sql":"DROP TABLE orders;\n"}' || true
    ensure_migration demo 3 '{"version":"3","name":"index orders by customer","up_sql":"CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at);\n","down_sql":"DROP INDEX orders_customer_created_idx;\n"}' || true
    ensure_migration demo 3.1 '{"version":"3.1","name":"add customer names","up_sql":"ALTER TABLE customers ADD COLUMN name text NOT NULL DEFAULT '"''"';\n","down_sql":"ALTER TABLE customers DROP COLUMN name;\n"}' || true
}

# MariaDB SQL differs from PostgreSQL's, so its demo is a project of its own.
seed_mariadb_demo() {
    MARIADB_NOTE=''
    my_sql -e 'CREATE DATABASE IF NOT EXISTS mh_demo_my_1' \
        || { seed_problem "could not create MariaDB database mh_demo_my_1" && return 0; }

    ensure_project demo-mariadb '{"slug":"demo-mariadb","name":"Demo shop (MariaDB)","description":"The demo shop schema on one MariaDB database."}' \
        || return 0

    local rc=0
    if ensure_db_set demo-mariadb demo-mariadb daily; then
        ensure_target demo-mariadb "$DB_SET_ID" my-1 "{\"name\":\"my-1\",\"engine\":\"mysql\",\"host\":\"$MH_MY_HOST\",\"port\":$MH_MY_PORT,\"database\":\"mh_demo_my_1\",\"username\":\"$MH_MY_SUPERUSER\",\"password\":\"\",\"tls_mode\":\"disable\",\"worker_pool\":\"default\"}" \
            || rc=$?
        if ((rc == 2)); then
            MARIADB_NOTE="MariaDB target not added: the API answered 422 ($(api_error))"
            info "note: $MARIADB_NOTE"
        fi
    fi

    ensure_migration demo-mariadb 1 '{"version":"1","name":"create customers","up_sql":"CREATE TABLE customers (\n    id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,\n    email varchar(320) NOT NULL,\n    UNIQUE KEY customers_email_key (email)\n) ENGINE=InnoDB;\n","down_sql":"DROP TABLE customers;\n"}' || true
    ensure_migration demo-mariadb 2 '{"version":"2","name":"create orders","up_sql":"CREATE TABLE orders (\n    id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,\n    customer_id bigint unsigned NOT NULL,\n    total_cents bigint NOT NULL,\n    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,\n    CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)\n) ENGINE=InnoDB;\n","down_sql":"DROP TABLE orders;\n"}' || true
    ensure_migration demo-mariadb 3 '{"version":"3","name":"index orders by customer","up_sql":"CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at);\n","down_sql":"DROP INDEX orders_customer_created_idx ON orders;\n"}' || true
}

# --- summary ---------------------------------------------------------------------------

print_summary() {
    local sso
    sso=$(curl -s --max-time 2 "$BASE_URL/readyz" | json_get sso 2>/dev/null || echo unknown)
    cat <<EOF

migrate-hub is running.

  URL           $MH_PUBLIC_URL   (JSON API under /api/v1)
  Admin token   $TOKEN

  Demo accounts      role      API token
    admin@example.com     admin     .dev/token-admin
    manager@example.com   manager   .dev/token-manager
    manager2@example.com  manager   .dev/token-manager2
    user@example.com      user      .dev/token-user
EOF
    if [[ $sso == configured ]]; then
        cat <<EOF
  Browser sign-in  open $MH_PUBLIC_URL and sign in at the development identity provider
                   ($MH_OIDC_ISSUER) with any demo e-mail above and the password "demo".
                   Also there: unverified@example.com and outsider@foreign.test (both refused).
EOF
    fi
    if [[ $sso != configured ]]; then
        echo "  Browser sign-in is off (no MH_OIDC_CLIENT_ID in .dev/env): use the API tokens."
    fi
    cat <<EOF

  Try it        curl -H "Authorization: Bearer \$(cat .dev/token-admin)" $BASE_URL/api/v1/projects
  Demo data     project demo:         DB set demo-pg (daily), targets pg-1..3 = mh_demo_pg_1..3
                project demo-mariadb: DB set demo-mariadb (daily), target my-1 = mh_demo_my_1
EOF
    if [[ -n ${MARIADB_NOTE:-} ]]; then
        echo "                note: $MARIADB_NOTE"
    fi
    cat <<EOF

  Metrics       $BASE_URL/metrics$(for i in "${!WORKER_POOLS[@]}"; do printf ', http://127.0.0.1:%s/metrics (worker %s)' "$((METRICS_PORT + i))" "${WORKER_POOLS[$i]}"; done)
  Traces        ${OTEL_EXPORTER_OTLP_ENDPOINT:+sent over OTLP/HTTP to $OTEL_EXPORTER_OTLP_ENDPOINT}${OTEL_EXPORTER_OTLP_ENDPOINT:-off: export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 (Jaeger, Tempo, a collector) and run dev-up again}
  Settings      .dev/env
  Logs          .dev/control-plane.log$(printf ', .dev/worker-%s.log' "${WORKER_POOLS[@]}")
  Stop          scripts/dev-down.sh
EOF
}

main() {
    mkdir -p "$MH_DEV_DIR"
    chmod 700 "$MH_DEV_DIR"

    bash scripts/ensure-services.sh --no-nextest

    info "cargo build --workspace"
    cargo build --workspace
    [[ -x $CONTROL_PLANE && -x $WORKER ]] || die "the build did not produce $CONTROL_PLANE and $WORKER"

    write_env_once
    apply_port_override
    load_env

    pg_create_database "$(tool_database_name)"
    info "migrating the tool database"
    "$CONTROL_PLANE" migrate || die "control-plane migrate failed"

    start_processes
    ensure_accounts

    info "seeding demo data through the API"
    seed_postgres_demo
    seed_mariadb_demo

    print_summary
    if ((SEED_PROBLEMS > 0)); then
        warn "$SEED_PROBLEMS problem(s) while seeding demo data (see above); the instance itself is running"
        exit 1
    fi
}

# Sourcing the file (e.g. to try one step) defines the functions only.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
