#!/bin/sh
# docker compose: run once by the postgres image when it creates a DC's cluster (an empty data
# volume). Makes the server read the development settings that `cargo xtask up` and the tests
# use too (deploy/postgres/meerkat.conf, mounted at /etc/postgresql/meerkat.conf). The
# database itself is POSTGRES_DB.
set -e
echo "include '/etc/postgresql/meerkat.conf'" >> "$PGDATA/postgresql.conf"
