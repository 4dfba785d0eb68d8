#!/bin/sh
# Apply the environment to Postfix's configuration, then run Postfix in the foreground as
# PID 1 (postfix start-fg: master stays in the foreground; docker stop ends it cleanly).
#
#   SMTP_PORT        smtpd's TCP port (default 2525)
#   SMTP_INTERFACES  inet_interfaces: loopback-only (default) or all (in a pod)
#   TEMPMAIL_DOMAINS virtual_alias_domains: the domains of the temporary addresses
#   TEMPMAIL_SOCKET  the sidecar's socket as seen here (default /var/spool/postfix/tempmail/socket)
#   TEMPMAIL_MAP     the socketmap name, tempmail's [server] map_name (default tempmail)
#
# Any other argument list is run instead (for example: sh, or postconf -n).
set -eu

: "${SMTP_PORT:=2525}"
: "${SMTP_INTERFACES:=loopback-only}"
: "${TEMPMAIL_DOMAINS:=example.test}"
: "${TEMPMAIL_SOCKET:=/var/spool/postfix/tempmail/socket}"
: "${TEMPMAIL_MAP:=tempmail}"

postconf -e \
  "inet_interfaces = $SMTP_INTERFACES" \
  "virtual_alias_domains = $TEMPMAIL_DOMAINS" \
  "virtual_alias_maps = socketmap:unix:$TEMPMAIL_SOCKET:$TEMPMAIL_MAP"
# Postfix's programs pause until main.cf is about two seconds old (measured here: a start
# right after postconf -e takes 2.4 s instead of 0.3 s). Nothing runs yet that could miss
# the change, so date the file back.
touch -d '10 seconds ago' /etc/postfix/main.cf

# The smtpd listener on $SMTP_PORT. The image has no inet service (the Containerfile removes
# smtp/inet), and the environment of a container never changes, so adding ours is enough
# and a restarted container gets the same master.cf. (Listing services with postconf -M
# here would cost about 2 s at every start.)
postconf -M "$SMTP_PORT/inet=$SMTP_PORT inet n - n - - smtpd"

if [ "$#" -gt 0 ]; then
  exec "$@"
fi

exec postfix start-fg
