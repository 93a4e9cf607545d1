#!/bin/sh
# What the upstream image's entrypoint does that the compose file relies on: the default user
# from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS (taken on the first start only, as the
# broker does), listeners on every interface, logs on the console, data in /var/lib/rabbitmq
# owned by the broker's user. The node name is rabbit@<hostname>, the broker's default.
set -e
cat > /etc/rabbitmq/conf.d/10-defaults.conf <<CONF
loopback_users.guest = false
listeners.tcp.default = 5672
management.tcp.port = 15672
log.console = true
log.console.level = info
log.file = false
CONF
if [ -n "$RABBITMQ_DEFAULT_USER" ]; then
    echo "default_user = $RABBITMQ_DEFAULT_USER" >> /etc/rabbitmq/conf.d/10-defaults.conf
fi
if [ -n "$RABBITMQ_DEFAULT_PASS" ]; then
    echo "default_pass = $RABBITMQ_DEFAULT_PASS" >> /etc/rabbitmq/conf.d/10-defaults.conf
fi
mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
# The CLI (rabbitmq-diagnostics, for the healthcheck) and the node share the cookie there.
export HOME=/var/lib/rabbitmq
if [ "$1" = rabbitmq-server ]; then
    shift
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
