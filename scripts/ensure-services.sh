#!/usr/bin/env bash
# Makes sure the local services that tests and the local stack need are up:
#
#   - PostgreSQL on 127.0.0.1:5432, user `postgres` without a password over TCP,
#     with the pgcrypto and hstore extensions available (the queue needs them);
#   - MariaDB on 127.0.0.1:3306, user `root` without a password over TCP;
#   - cargo-nextest, the test runner, promtool, and headless Chromium with
#     chromedriver for the browser tests (all skipped with --no-nextest);
#   - clang and libclang, which building the SQL review's PostgreSQL parser
#     (pg_query: libpg_query compiled with bindings from bindgen) needs.
#
# Missing servers are installed from the distribution's packages, stopped ones
# are started. Safe to run any number of times; when everything is already up
# it only checks, which takes well under a second.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# How long a server may take to accept connections after a start.
START_TIMEOUT=${MH_SERVICE_START_TIMEOUT:-60}

# --- PostgreSQL -----------------------------------------------------------------

pg_extensions_ok() {
    [[ $(pg_sql -d postgres -Atc \
        "SELECT count(*) FROM pg_available_extensions WHERE name IN ('pgcrypto', 'hstore')" \
        2>/dev/null) == 2 ]]
}

pg_server_installed() {
    have psql && have pg_isready && have pg_ctlcluster \
        && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# Lets `postgres` (and every role) in over loopback TCP without a password.
# First matching line wins in pg_hba.conf, so ours go on top.
pg_allow_loopback_trust() {
    local version=$1 hba="/etc/postgresql/$1/main/pg_hba.conf" marker='# migrate-hub: local development'
    [[ -f $hba ]] || die "cannot find $hba"
    if as_root grep -qF "$marker" "$hba"; then
        return 0
    fi
    info "allowing password-less loopback connections in $hba"
    local tmp
    tmp=$(mktemp)
    {
        echo "$marker"
        echo "host    all    all    127.0.0.1/32    trust"
        echo "host    all    all    ::1/128         trust"
        echo
        as_root cat "$hba"
    } >"$tmp"
    # Writing through `cat >` keeps the file's owner and mode.
    # shellcheck disable=SC2016 # expanded by the inner shell
    as_root sh -c 'cat "$1" > "$2"' _ "$tmp" "$hba"
    rm -f "$tmp"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
}

ensure_postgres() {
    if pg_ready && pg_login_ok && pg_extensions_ok; then
        return 0
    fi

    if ! pg_server_installed; then
        apt_install postgresql postgresql-contrib
    fi

    local version
    version=$(pg_cluster_version)
    if [[ -z $version ]]; then
        # The server package is there but no cluster was created.
        # shellcheck disable=SC2012 # version numbers only
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        info "creating PostgreSQL cluster $version/main"
        as_root pg_createcluster "$version" main
    fi

    if ! pg_ready; then
        if as_root pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
            # Running, yet not on our address: most likely another port.
            wait_until 5 "PostgreSQL on $MH_PG_HOST:$MH_PG_PORT" pg_ready \
                || die "PostgreSQL $version/main runs but does not answer on $MH_PG_HOST:$MH_PG_PORT (see pg_lsclusters)"
        else
            info "starting PostgreSQL $version/main"
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
            wait_until "$START_TIMEOUT" "PostgreSQL on $MH_PG_HOST:$MH_PG_PORT" pg_ready \
                || die "PostgreSQL did not become ready; see /var/log/postgresql/postgresql-$version-main.log"
        fi
    fi

    if ! pg_login_ok; then
        pg_allow_loopback_trust "$version"
        wait_until 10 "password-less login as $MH_PG_SUPERUSER" pg_login_ok \
            || die "cannot log in to PostgreSQL as $MH_PG_SUPERUSER over TCP without a password; check /etc/postgresql/$version/main/pg_hba.conf"
    fi

    if ! pg_extensions_ok; then
        apt_install postgresql-contrib
        pg_extensions_ok || die "PostgreSQL extensions pgcrypto and hstore are not available (package postgresql-contrib)"
    fi
    # The TLS-mode tests need a server that offers TLS (Debian's default:
    # the snakeoil certificate of the ssl-cert package).
    if ! pg_ssl_on; then
        info "turning on TLS in PostgreSQL (snakeoil certificate)"
        [[ -r /etc/ssl/certs/ssl-cert-snakeoil.pem ]] || apt_install ssl-cert
        [[ -r /etc/ssl/certs/ssl-cert-snakeoil.pem ]] || as_root make-ssl-cert generate-default-snakeoil
        as_root usermod -a -G ssl-cert postgres 2>/dev/null || true
        pg_sql -d postgres -c "ALTER SYSTEM SET ssl_cert_file = '/etc/ssl/certs/ssl-cert-snakeoil.pem'" \
            -c "ALTER SYSTEM SET ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'" \
            -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
        wait_until 10 "PostgreSQL with TLS" pg_ssl_on \
            || die "PostgreSQL did not turn TLS on; see its log under /var/log/postgresql/"
    fi
}

pg_ssl_on() { [[ $(pg_sql -d postgres -Atc "SHOW ssl" 2>/dev/null) == on ]]; }

# --- MariaDB ----------------------------------------------------------------------

my_daemon() {
    local bin
    for bin in /usr/sbin/mariadbd /usr/sbin/mysqld; do
        if [[ -x $bin ]]; then
            echo "$bin"
            return 0
        fi
    done
    return 1
}

my_datadir() {
    local dir
    dir=$(my_print_defaults_cmd mysqld | sed -n 's/^--datadir=//p' | tail -1)
    echo "${dir:-/var/lib/mysql}"
}

my_print_defaults_cmd() {
    if have my_print_defaults; then
        my_print_defaults "$@" 2>/dev/null || true
    elif have mariadb-print-defaults; then
        mariadb-print-defaults "$@" 2>/dev/null || true
    fi
}

# Over the local socket, as the operating system's root (unix_socket auth).
my_socket_ping() {
    as_root mysqladmin --protocol=SOCKET -u root --connect-timeout=2 ping >/dev/null 2>&1
}

my_socket_sql() {
    as_root "$(my_client)" --protocol=SOCKET -u root "$@"
}

# A fresh Debian install lets root in only through the socket. Add root
# accounts for the loopback addresses with an empty password.
my_allow_loopback_root() {
    info "allowing password-less root over loopback TCP in MariaDB"
    my_socket_sql -e "
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
        FLUSH PRIVILEGES;" || die "could not add root accounts over the MariaDB socket"
    if ! my_login_ok; then
        # With name resolution on, 127.0.0.1 is seen as `localhost` and meets
        # root@localhost (socket-only). Let that account take an empty
        # password too; socket login keeps working.
        my_socket_sql -e "
            ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
            FLUSH PRIVILEGES;" || die "could not allow password-less root@localhost in MariaDB"
    fi
}

ensure_mariadb() {
    if my_ready && my_login_ok; then
        return 0
    fi

    local daemon
    if ! daemon=$(my_daemon); then
        apt_install mariadb-server
        daemon=$(my_daemon) || die "mariadb-server installed but no server binary found in /usr/sbin"
    fi
    have mysqladmin || apt_install mariadb-client

    if ! my_ready && ! my_socket_ping; then
        local datadir
        datadir=$(my_datadir)
        if [[ ! -d $datadir/mysql ]]; then
            info "initialising the MariaDB data directory $datadir"
            local install_db=mariadb-install-db
            have "$install_db" || install_db=mysql_install_db
            as_root "$install_db" --user=mysql --datadir="$datadir" --skip-test-db >/dev/null \
                || die "$install_db failed"
        fi
        # The pid file and socket live here; it is a tmpfs on most systems.
        as_root install -d -o mysql -g mysql -m 0755 /run/mysqld
        info "starting MariaDB ($daemon)"
        as_root start-stop-daemon --start --oknodo --background --exec "$daemon" -- --user=mysql
        wait_until "$START_TIMEOUT" "MariaDB to start" my_socket_ping \
            || die "MariaDB did not start; see /var/log/mysql/error.log or the journal"
    fi

    if ! my_login_ok; then
        my_allow_loopback_root
    fi
    wait_until 10 "MariaDB on $MH_MY_HOST:$MH_MY_PORT" my_login_ok \
        || die "cannot log in to MariaDB as root over $MH_MY_HOST:$MH_MY_PORT without a password (is the server listening on TCP? check bind-address, port and skip-networking)"
}

# --- Build tools --------------------------------------------------------------------

# pg_query compiles libpg_query and generates its Rust bindings with bindgen,
# which loads libclang at build time: without both, `cargo build` fails in
# pg_query's build script.
build_tools_ok() {
    have clang && compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null
}

ensure_build_tools() {
    if ! build_tools_ok; then
        info "installing clang and libclang (Debian packages clang, libclang-dev) for pg_query's build"
        apt_install clang libclang-dev
    fi
}

# --- Test runner --------------------------------------------------------------------

# Test tools from Debian: promtool (package prometheus) checks the /metrics
# output. Installed without its recommended extras; the server it ships is
# not started or used.
ensure_test_tools() {
    if ! have promtool; then
        info "installing promtool (Debian package prometheus)"
        apt_install prometheus
    fi
    # The browser end-to-end tests drive headless Chromium through chromedriver.
    if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
        info "installing Chromium and chromedriver (Debian packages chromium, chromium-driver)"
        apt_install chromium chromium-driver
    fi
}

ensure_nextest() {
    if have cargo-nextest || cargo nextest --version >/dev/null 2>&1; then
        return 0
    fi
    have cargo || die "cargo not found; install a Rust toolchain (rustup) first"
    info "installing cargo-nextest"
    cargo install cargo-nextest --locked
}

usage() {
    echo "usage: $0 [--quiet] [--no-nextest]" >&2
    exit 2
}

main() {
    local quiet=0 nextest=1 arg
    for arg in "$@"; do
        case $arg in
        --quiet) quiet=1 ;;
        --no-nextest) nextest=0 ;;
        *) usage ;;
        esac
    done
    ensure_build_tools
    ensure_postgres
    ensure_mariadb
    if ((nextest)); then
        ensure_nextest
        ensure_test_tools
    fi
    if ((!quiet)); then
        info "PostgreSQL $(pg_sql -d postgres -Atc 'SHOW server_version') on $MH_PG_HOST:$MH_PG_PORT," \
            "MariaDB $(my_sql -N -B -e 'SELECT VERSION()') on $MH_MY_HOST:$MH_MY_PORT: ready"
    fi
}

main "$@"
