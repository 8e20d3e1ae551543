# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it, do not run it:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything here is plain bash plus the client tools of PostgreSQL and
# MariaDB, so the scripts work on a fresh Debian-like machine.

# The repository root, whatever the caller's working directory.
MH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Where the local services answer. Tests and the local stack use these.
MH_PG_HOST=127.0.0.1
MH_PG_PORT=5432
MH_PG_SUPERUSER=postgres
MH_MY_HOST=127.0.0.1
MH_MY_PORT=3306
MH_MY_SUPERUSER=root

if [[ -t 2 ]]; then
    _mh_bold=$'\e[1m' _mh_red=$'\e[31m' _mh_yellow=$'\e[33m' _mh_reset=$'\e[0m'
else
    _mh_bold='' _mh_red='' _mh_yellow='' _mh_reset=''
fi

# Progress goes to standard error, so standard output stays clean for values.
info() { printf '%s==>%s %s\n' "$_mh_bold" "$_mh_reset" "$*" >&2; }
warn() { printf '%swarning:%s %s\n' "$_mh_yellow" "$_mh_reset" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$_mh_red" "$_mh_reset" "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

# Runs a command as another system user (e.g. postgres), from root or via sudo.
as_user() {
    local user=$1
    shift
    if [[ $(id -un) == "$user" ]]; then
        "$@"
    elif [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        if have runuser; then runuser -u "$user" -- "$@"; else su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"; fi
    elif have sudo; then
        sudo -u "$user" -- "$@"
    else
        die "need to run as $user: $* (run as root or install sudo)"
    fi
}

# wait_until SECONDS DESCRIPTION COMMAND...
# Polls COMMAND until it succeeds or the deadline passes. Short polls keep the
# happy path fast; the deadline keeps a broken service from hanging the caller.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            warn "gave up after ${seconds}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# apt_install PACKAGE...: non-interactive install from the distribution.
_mh_apt_updated=0
apt_install() {
    have apt-get || die "apt-get not found; install $* with your system's package manager"
    export DEBIAN_FRONTEND=noninteractive
    if ((_mh_apt_updated == 0)); then
        info "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
        _mh_apt_updated=1
    fi
    info "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" \
        || die "apt-get install $* failed"
}

# --- PostgreSQL -----------------------------------------------------------------

# psql as the superuser over TCP, never prompting for a password.
pg_sql() {
    psql -X -w -q -v ON_ERROR_STOP=1 -h "$MH_PG_HOST" -p "$MH_PG_PORT" -U "$MH_PG_SUPERUSER" "$@"
}

pg_ready() { pg_isready -q -h "$MH_PG_HOST" -p "$MH_PG_PORT" -t 2; }

pg_login_ok() { pg_sql -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; }

# The newest installed PostgreSQL cluster version (e.g. 15), or nothing.
pg_cluster_version() {
    [[ -d /etc/postgresql ]] || return 0
    # shellcheck disable=SC2012 # version numbers only
    ls /etc/postgresql 2>/dev/null | sort -V | tail -1
}

pg_database_exists() {
    [[ $(pg_sql -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$1'") == 1 ]]
}

# Creates database $1 on the local server unless it exists.
pg_create_database() {
    if ! pg_database_exists "$1"; then
        info "creating PostgreSQL database $1"
        pg_sql -d postgres -c "CREATE DATABASE \"$1\"" >/dev/null
    fi
}

# --- MariaDB ----------------------------------------------------------------------

# The client is `mariadb` on newer packages, `mysql` on older ones.
my_client() {
    if have mariadb; then echo mariadb; else echo mysql; fi
}

# SQL as root over TCP, without a password.
my_sql() {
    "$(my_client)" --protocol=TCP -h "$MH_MY_HOST" -P "$MH_MY_PORT" -u "$MH_MY_SUPERUSER" \
        --connect-timeout=3 "$@"
}

my_ready() {
    mysqladmin --protocol=TCP -h "$MH_MY_HOST" -P "$MH_MY_PORT" -u "$MH_MY_SUPERUSER" \
        --connect-timeout=2 ping >/dev/null 2>&1
}

my_login_ok() { my_sql -e 'SELECT 1' >/dev/null 2>&1; }

# --- Processes started by our scripts ------------------------------------------

# pid_alive PIDFILE EXPECTED: true when the pid in PIDFILE runs a command line
# containing EXPECTED. Checking the command line keeps us from signalling an
# unrelated process that reused the pid.
pid_alive() {
    local file=$1 expected=$2 pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$expected"
}

# stop_pidfile PIDFILE EXPECTED [SECONDS]: TERM, wait, then KILL; removes PIDFILE.
stop_pidfile() {
    local file=$1 expected=$2 seconds=${3:-15} pid
    if pid_alive "$file" "$expected"; then
        pid=$(<"$file")
        info "stopping $(basename "$file" .pid) (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_until "$seconds" "pid $pid to exit" _mh_pid_gone "$pid"; then
            warn "pid $pid did not stop on TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_until 5 "pid $pid to exit" _mh_pid_gone "$pid" || true
        fi
    fi
    rm -f "$file"
}

_mh_pid_gone() {
    # A zombie (exited, not yet reaped) counts as gone.
    [[ ! -d /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]
}

# JSON field from standard input: json_get KEY [KEY...] walks nested objects.
# python3 is used instead of jq so that no extra package is needed.
json_get() {
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    if isinstance(value, list):
        value = value[int(key)]
    else:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        sys.exit(1)
print(value if not isinstance(value, (dict, list)) else json.dumps(value))
' "$@"
}

# --- The local instance (scripts/dev-up.sh, scripts/dev-down.sh) ----------------

MH_DEV_DIR="$MH_ROOT/.dev"

# Stops every process that dev-up started, as recorded in .dev/*.pid. Only a
# pid whose command line still names our binary is signalled.
dev_stop_all() {
    local file name
    shopt -s nullglob
    for file in "$MH_DEV_DIR"/*.pid; do
        name=$(basename "$file" .pid)
        case $name in
        control-plane) stop_pidfile "$file" "$MH_ROOT/target/debug/control-plane" ;;
        worker-*) stop_pidfile "$file" "$MH_ROOT/target/debug/worker" ;;
        dev-idp) stop_pidfile "$file" "server.js" ;;
        *) warn "ignoring unknown pid file $file" ;;
        esac
    done
    shopt -u nullglob
}
