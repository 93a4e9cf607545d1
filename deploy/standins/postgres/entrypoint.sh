#!/bin/sh
# What the upstream image's entrypoint does that the compose file relies on: on an empty
# PGDATA, a new cluster whose superuser `postgres` has POSTGRES_PASSWORD, the database
# POSTGRES_DB, then every /docker-entrypoint-initdb.d/*.sh (run if executable, else sourced,
# with PGDATA set) against a server listening on the Unix socket only; then the server,
# listening on every interface with password (scram-sha-256) authentication over TCP.
set -e
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" --username=postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    if [ -n "$POSTGRES_DB" ] && [ "$POSTGRES_DB" != postgres ]; then
        as_postgres psql -v ON_ERROR_STOP=1 -U postgres -d postgres -q \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    export PGDATA
    for f in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$f" ] || continue
        echo "standin-entrypoint: running $f"
        if [ -x "$f" ]; then "$f"; else . "$f"; fi
    done
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop
    echo "standin-entrypoint: cluster initialised"
fi
if [ "$1" = postgres ]; then
    shift
    exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" "$@"
fi
exec "$@"
