#!/bin/sh
# Apply the environment to Postfix's configuration, then run Postfix in the foreground as
# PID 1 (postfix start-fg: master stays in the foreground; docker stop ends it cleanly).
#
#   SMTP_PORT        smtpd's TCP port (default 2525)
#   SMTP_INTERFACES  inet_interfaces: loopback-only (default) or all (in a pod)
#   TEMPMAIL_POSTFIX_CONFIG
#                    the main.cf lines that `tempmail postfix-config` prints, run where
#                    tempmail's configuration is (the sidecar image) and told where this
#                    container sees the socket:
#                      docker run --rm -v ... localhost/tempmail:VERSION postfix-config \
#                        --postfix-socket /var/spool/postfix/tempmail/socket
#                    They are applied exactly as the README says (postconf -e, one line each):
#                    virtual_alias_domains, and virtual_alias_maps with the guard that asks
#                    tempmail only about the temporary domains, so that a stopped sidecar
#                    defers only their mail. Nothing here writes the guard by hand.
#   TEMPMAIL_DOMAINS, TEMPMAIL_SOCKET, TEMPMAIL_MAP
#                    deprecated, read only without TEMPMAIL_POSTFIX_CONFIG: a hand-written
#                    lookup WITHOUT the guard (every recipient is looked up, so a stopped
#                    sidecar defers all mail). A warning says so at every start.
#
# Any other argument list is run instead (for example: sh, or postconf -n).
set -eu

: "${SMTP_PORT:=2525}"
: "${SMTP_INTERFACES:=loopback-only}"

postconf -e "inet_interfaces = $SMTP_INTERFACES"
if [ -n "${TEMPMAIL_POSTFIX_CONFIG:-}" ]; then
  printf '%s\n' "$TEMPMAIL_POSTFIX_CONFIG" | sed '/^[[:space:]]*$/d' | xargs -r -d '\n' postconf -e
elif [ -n "${TEMPMAIL_DOMAINS:-}${TEMPMAIL_SOCKET:-}${TEMPMAIL_MAP:-}" ]; then
  echo "entrypoint.sh: warning: TEMPMAIL_DOMAINS without TEMPMAIL_POSTFIX_CONFIG: every" \
    "recipient is looked up, so a stopped sidecar defers all mail; set TEMPMAIL_POSTFIX_CONFIG" \
    "to what 'tempmail postfix-config' prints" >&2
  postconf -e \
    "virtual_alias_domains = ${TEMPMAIL_DOMAINS:-example.test}" \
    "virtual_alias_maps = socketmap:unix:${TEMPMAIL_SOCKET:-/var/spool/postfix/tempmail/socket}:${TEMPMAIL_MAP:-tempmail}"
else
  echo "entrypoint.sh: set TEMPMAIL_POSTFIX_CONFIG to what 'tempmail postfix-config" \
    "--postfix-socket /var/spool/postfix/tempmail/socket' prints (see docs/containers.md)" >&2
  exit 78
fi
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
