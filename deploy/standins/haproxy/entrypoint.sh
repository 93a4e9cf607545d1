#!/bin/sh
# As the upstream image: the configuration at /usr/local/etc/haproxy/haproxy.cfg, the master
# process in the foreground (-W -db), logs on stdout (as the file says).
set -e
if [ "$1" = haproxy ]; then
    shift
    exec haproxy -W -db "$@"
fi
exec "$@"
