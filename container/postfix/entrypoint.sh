#!/bin/sh
# Apply the environment to Postfix's configuration, then run Postfix in the foreground as
# PID 1 (postfix start-fg: master stays in the foreground; docker stop ends it cleanly).
#
#   SMTP_PORT        smtpd's TCP port (default 2525)
#   SMTP_INTERFACES  inet_interfaces: loopback-only (default) or all (in a pod)
#   TEMPMAIL_POSTFIX_CONFIG
#                    the main.cf lines that `tempmail postfix-config` prints, run where
#                    tempmail's configuration is (the sidecar) and told where this container
#                    sees the socket:
#                      docker exec tempmail tempmail postfix-config \
#                        --postfix-socket /var/spool/postfix/tempmail/socket
#                    They are applied exactly as the README says (postconf -e, one line each):
#                    virtual_alias_domains, and virtual_alias_maps with the guard that asks
#                    tempmail only about the temporary domains, so that a stopped sidecar
#                    defers only their mail. Nothing here writes the guard by hand.
#                    Refused at the start (exit 78), with the reason: a line that is not one of
#                    the three settings postfix-config prints, and a virtual_alias_maps that
#                    postconf cannot expand. The lines hold '$$' (main.cf's literal '$'), and
#                    compose files and Kubernetes' env "value:" read '$$' as '$': the lines
#                    must reach this container as printed (docs/containers.md).
#   TEMPMAIL_DOMAINS, TEMPMAIL_SOCKET, TEMPMAIL_MAP
#                    removed in 2.0.0 (they gave a lookup without the guard: a stopped sidecar
#                    deferred all mail). Set, they stop the start (exit 78) and say what to do.
#
# Any other argument list is run instead (for example: sh, or postconf -n).
set -eu

: "${SMTP_PORT:=2525}"
: "${SMTP_INTERFACES:=loopback-only}"

PRINT="tempmail postfix-config --postfix-socket /var/spool/postfix/tempmail/socket"
refuse() {
  echo "entrypoint.sh: $*" >&2
  exit 78
}
if [ -n "${TEMPMAIL_DOMAINS:-}${TEMPMAIL_SOCKET:-}${TEMPMAIL_MAP:-}" ]; then
  refuse "TEMPMAIL_DOMAINS, TEMPMAIL_SOCKET and TEMPMAIL_MAP were removed in 2.0.0: remove" \
    "them and set TEMPMAIL_POSTFIX_CONFIG to what '$PRINT' prints (see docs/containers.md)"
fi
LINES=$(printf '%s\n' "${TEMPMAIL_POSTFIX_CONFIG:-}" | sed '/^[[:space:]]*$/d')
if [ -z "$LINES" ]; then
  refuse "set TEMPMAIL_POSTFIX_CONFIG to what '$PRINT' prints (see docs/containers.md)"
fi
OTHER=$(printf '%s\n' "$LINES" \
  | grep -Ev '^(virtual_alias_domains|virtual_alias_maps|recipient_delimiter) = ' || true)
if [ -n "$OTHER" ]; then
  refuse "TEMPMAIL_POSTFIX_CONFIG has a line that '$PRINT' does not print:" \
    "$(printf '%s\n' "$OTHER" | head -n 1 | cut -c 1-200)"
fi

postconf -e "inet_interfaces = $SMTP_INTERFACES"
printf '%s\n' "$LINES" | xargs -r -d '\n' postconf -e
# Postfix's programs pause until main.cf is about two seconds old (measured here: a start
# right after postconf -e takes 2.4 s instead of 0.3 s). Nothing runs yet that could miss
# the change, so date the file back.
touch -d '10 seconds ago' /etc/postfix/main.cf

# The guard's '$$' must have arrived as printed: a single '$' is a broken macro in main.cf,
# which would fail every lookup later ("451 4.3.0 Temporary lookup failure" for all mail).
if ! postconf -xh virtual_alias_maps >/dev/null 2>&1; then
  refuse "TEMPMAIL_POSTFIX_CONFIG: postconf cannot expand virtual_alias_maps (a '\$\$' of the" \
    "printed lines arrived as '\$'?): write each '\$' of them as '\$\$' in a compose file, or" \
    "pass them from a ConfigMap with valueFrom in Kubernetes (see docs/containers.md)"
fi

# The smtpd listener on $SMTP_PORT. The image has no inet service (the Containerfile removes
# smtp/inet), and the environment of a container never changes, so adding ours is enough
# and a restarted container gets the same master.cf. (Listing services with postconf -M
# here would cost about 2 s at every start.)
postconf -M "$SMTP_PORT/inet=$SMTP_PORT inet n - n - - smtpd"

if [ "$#" -gt 0 ]; then
  exec "$@"
fi

exec postfix start-fg
