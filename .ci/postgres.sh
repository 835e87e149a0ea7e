#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the taskq tests and exports its URL.
#
#   source .ci/postgres.sh            # exports TASKQ_TEST_POSTGRES_URL in this shell
#   eval "$(bash .ci/postgres.sh)"    # same, from a child shell (prints `export ...`)
#
# If TASKQ_TEST_POSTGRES_URL is already set, nothing is done. Otherwise:
# - PostgreSQL is installed from Debian's packages when `initdb`/`postgres` are missing;
# - when run as root, a system user `taskq-pg` is created to own the cluster;
# - a cluster is initialised in a temporary directory, started on 127.0.0.1 on a free port
#   (54329 upwards) with its unix socket inside that directory, fsync on and
#   max_connections=200, trust authentication (a test cluster on loopback only);
# - a database `taskq_test` is created;
# - `target/taskq-pg.env` records PGBIN, PGDATA, PGPORT, PGUSER_OS and the URL, so that a
#   second call reuses the running server (and tests can `pg_ctl restart` it).
# The server is left running for the test run.

__taskq_pg_main() {
    local root envfile
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    envfile="$root/target/taskq-pg.env"
    local pguser="taskq-pg" dbname="taskq_test"

    __taskq_pg_log() { echo "postgres.sh: $*" >&2; }

    # Runs a command as the cluster's owner.
    __taskq_pg_as() {
        if [ "$(id -u)" = "0" ]; then
            if command -v runuser >/dev/null 2>&1; then
                (cd / && runuser -u "$pguser" -- "$@")
            else
                (cd / && su -s /bin/sh "$pguser" -c "$(printf '%q ' "$@")")
            fi
        else
            "$@"
        fi
    }

    __taskq_pg_bindir() {
        local d
        d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
        if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
            dirname "$(readlink -f "$(command -v initdb)")"
            return 0
        fi
        return 1
    }

    __taskq_pg_port_busy() {
        (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1
    }

    # 1. Reuse a server recorded by an earlier call.
    if [ -f "$envfile" ]; then
        local PGBIN="" PGDATA="" PGPORT="" PGSOCK="" URL=""
        # shellcheck disable=SC1090
        . "$envfile"
        if [ -n "$PGBIN" ] && [ -x "$PGBIN/pg_isready" ] &&
            "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -t 2; then
            __taskq_pg_log "reusing the server on port $PGPORT ($PGDATA)"
            export TASKQ_TEST_POSTGRES_URL="$URL"
            echo "export TASKQ_TEST_POSTGRES_URL=$URL"
            return 0
        fi
        if [ -n "$PGDATA" ] && [ -f "$PGDATA/PG_VERSION" ] && [ -x "$PGBIN/pg_ctl" ] &&
            ! __taskq_pg_port_busy "$PGPORT"; then
            __taskq_pg_log "restarting the recorded cluster $PGDATA on port $PGPORT"
            rm -f "$PGDATA/postmaster.pid"
            if __taskq_pg_as "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/../server.log" -w -t 60 start >/dev/null; then
                export TASKQ_TEST_POSTGRES_URL="$URL"
                echo "export TASKQ_TEST_POSTGRES_URL=$URL"
                return 0
            fi
        fi
        __taskq_pg_log "the recorded server is gone; starting a new one"
        rm -f "$envfile"
    fi

    # 2. Install PostgreSQL when it is missing.
    local bindir
    if ! bindir="$(__taskq_pg_bindir)"; then
        if [ "$(id -u)" != "0" ]; then
            __taskq_pg_log "PostgreSQL is not installed and we are not root: install the 'postgresql' package"
            return 1
        fi
        __taskq_pg_log "installing PostgreSQL from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || return 1
        apt-get install -y -qq --no-install-recommends postgresql >&2 || return 1
        bindir="$(__taskq_pg_bindir)" || {
            __taskq_pg_log "PostgreSQL installed but initdb/postgres not found"
            return 1
        }
    fi

    # 3. A non-root owner.
    if [ "$(id -u)" = "0" ]; then
        if ! id -u "$pguser" >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin "$pguser" 2>/dev/null ||
                adduser --system --no-create-home --group "$pguser" >&2 || return 1
        fi
    else
        pguser="$(id -un)"
    fi

    # 4. A cluster in a temporary directory.
    local dir data
    dir="$(mktemp -d "${TMPDIR:-/tmp}/taskq-pg.XXXXXX")" || return 1
    chmod 755 "$dir"
    data="$dir/data"
    mkdir -p "$data"
    if [ "$(id -u)" = "0" ]; then chown -R "$pguser" "$dir"; fi
    chmod 700 "$data"
    __taskq_pg_as "$bindir/initdb" -D "$data" -U "$pguser" --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
        __taskq_pg_log "initdb failed:"
        cat "$dir/initdb.log" >&2
        return 1
    }

    # 5. Start on a free loopback port.
    local port=54329 tries=0
    while __taskq_pg_port_busy "$port" || [ -e "$dir/.s.PGSQL.$port" ]; do
        port=$((port + 1))
        tries=$((tries + 1))
        if [ "$tries" -gt 200 ]; then
            __taskq_pg_log "no free port from 54329 on"
            return 1
        fi
    done
    cat >>"$data/postgresql.conf" <<EOF
# taskq test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
max_connections = 200
shared_buffers = 128MB
EOF
    if ! __taskq_pg_as "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
        __taskq_pg_log "the server did not start:"
        tail -n 30 "$dir/server.log" >&2
        return 1
    fi
    local i
    for i in $(seq 1 60); do
        "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        sleep 0.5
    done
    if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        __taskq_pg_log "the server is not ready on port $port"
        return 1
    fi

    # 6. The test database.
    if ! "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$pguser" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$dbname'" | grep -q 1; then
        "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$pguser" "$dbname" || return 1
    fi

    local url="postgres://$pguser@127.0.0.1:$port/$dbname"
    mkdir -p "$root/target"
    cat >"$envfile" <<EOF
PGBIN='$bindir'
PGDATA='$data'
PGPORT='$port'
PGSOCK='$dir'
PGUSER_OS='$pguser'
URL='$url'
EOF
    __taskq_pg_log "PostgreSQL running on 127.0.0.1:$port (data in $data, log in $dir/server.log)"
    export TASKQ_TEST_POSTGRES_URL="$url"
    echo "export TASKQ_TEST_POSTGRES_URL=$url"
    return 0
}

if [ -n "${TASKQ_TEST_POSTGRES_URL:-}" ]; then
    echo "export TASKQ_TEST_POSTGRES_URL=$TASKQ_TEST_POSTGRES_URL"
else
    # Called as a condition so that a caller's `set -e` does not cut it short.
    if __taskq_pg_main; then __taskq_pg_status=0; else __taskq_pg_status=$?; fi
    unset -f __taskq_pg_main __taskq_pg_log __taskq_pg_as __taskq_pg_bindir __taskq_pg_port_busy
    if [ "$__taskq_pg_status" != 0 ]; then
        echo "postgres.sh: could not start PostgreSQL for the tests" >&2
        # `return` when sourced, `exit` when run.
        unset __taskq_pg_status
        return 1 2>/dev/null || exit 1
    fi
    unset __taskq_pg_status
fi
