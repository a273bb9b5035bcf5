# A throwaway PostgreSQL on loopback, for the tests and the cluster example. Source it, then:
#   pg_install            install PostgreSQL from Debian packages if initdb is missing
#   pg_start DIR          a new cluster in DIR (created), on a free loopback port, run by an
#                         unprivileged user when we are root (initdb refuses root); sets
#                         PG_BIN, PG_PORT, PG_URL (postgres://payproxy@127.0.0.1:PORT/postgres)
#   pg_stop DIR           stop it (immediate; the data is thrown away with DIR)
# PG_FSYNC=on keeps fsync (benchmarks); tests run with it off.
# Only loopback listens; authentication is trust on loopback (a test database, nothing else).

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(readlink -f "$(command -v initdb)")"; return 0; }
    return 1
}

pg_install() {
    pg_bin >/dev/null && return 0
    echo "==> installing PostgreSQL (Debian packages)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/dev/null
    pg_bin >/dev/null
}

# Runs a command as the cluster's owner: ourselves, or `nobody` when we are root.
pg_as() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u nobody -- "$@"
    else
        "$@"
    fi
}

pg_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

pg_start() {
    local dir=$1
    PG_BIN=$(pg_bin) || { echo "PostgreSQL is not installed" >&2; return 1; }
    mkdir -p "$dir"
    [[ $(id -u) -eq 0 ]] && chown nobody "$dir"
    chmod 700 "$dir"
    pg_as "$PG_BIN/initdb" -D "$dir/data" -U payproxy --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2; return 1; }
    local try
    for try in 1 2 3 4 5; do
        PG_PORT=$(pg_free_port)
        if pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=${PG_FSYNC:-off} -c max_connections=300" \
            start >/dev/null; then
            PG_URL="postgres://payproxy@127.0.0.1:$PG_PORT/postgres"
            export PG_BIN PG_PORT PG_URL
            return 0
        fi
    done
    cat "$dir/postgres.log" >&2
    return 1
}

pg_stop() {
    local dir=$1
    [[ -d "$dir/data" ]] || return 0
    pg_as "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}
