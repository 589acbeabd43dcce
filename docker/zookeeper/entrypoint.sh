#!/bin/bash
# Writes zoo.cfg from the environment and runs ZooKeeper in the foreground (as PID 1's exec, so
# `docker stop` reaches the JVM). `zookeeper-entrypoint healthcheck` is the image's healthcheck.
#
#   ZOO_MY_ID                  this member's id, 1-255 (required with ZOO_SERVERS)
#   ZOO_SERVERS                the ensemble, space-separated, as in zoo.cfg:
#                              "server.1=zk1:2888:3888;2181 server.2=zk2:2888:3888;2181 ..."
#                              (unset: a standalone server)
#   ZOO_TICK_TIME              ms, default 2000
#   ZOO_MIN_SESSION_TIMEOUT    ms, default 2 ticks (ZooKeeper's own lower bound)
#   ZOO_MAX_SESSION_TIMEOUT    ms, default 20 ticks
#   ZOO_4LW_COMMANDS_WHITELIST default "srvr,ruok,mntr,stat,cons" (srvr is the healthcheck's)
#   ZOO_HEAP                   the JVM's -Xmx, default 256m
set -euo pipefail

conf=/etc/zookeeper/docker
data=/var/lib/zookeeper-data

fail() {
  echo "zookeeper-entrypoint: $*" >&2
  exit 2
}

is_number() {
  [[ "$1" =~ ^[0-9]+$ ]]
}

if [ "${1:-}" = healthcheck ]; then
  exec 3<>/dev/tcp/127.0.0.1/2181
  printf srvr >&3
  grep -qE '^Mode: (standalone|leader|follower)' <&3
  exit
fi

tick=${ZOO_TICK_TIME:-2000}
is_number "$tick" && [ "$tick" -gt 0 ] || fail "ZOO_TICK_TIME must be a positive number of ms, got '$tick'"
min=${ZOO_MIN_SESSION_TIMEOUT:-$((2 * tick))}
max=${ZOO_MAX_SESSION_TIMEOUT:-$((20 * tick))}
is_number "$min" || fail "ZOO_MIN_SESSION_TIMEOUT must be a number of ms, got '$min'"
is_number "$max" || fail "ZOO_MAX_SESSION_TIMEOUT must be a number of ms, got '$max'"
[ "$min" -ge $((2 * tick)) ] || fail "ZOO_MIN_SESSION_TIMEOUT ($min ms) must be at least 2 ticks ($((2 * tick)) ms)"
[ "$max" -ge "$min" ] || fail "ZOO_MAX_SESSION_TIMEOUT ($max ms) must be at least ZOO_MIN_SESSION_TIMEOUT ($min ms)"

mkdir -p "$conf" "$data"
cat >"$conf/zoo.cfg" <<CFG
tickTime=$tick
initLimit=50
syncLimit=10
dataDir=$data
clientPort=2181
minSessionTimeout=$min
maxSessionTimeout=$max
admin.enableServer=false
4lw.commands.whitelist=${ZOO_4LW_COMMANDS_WHITELIST:-srvr,ruok,mntr,stat,cons}
maxClientCnxns=0
CFG

if [ -n "${ZOO_SERVERS:-}" ]; then
  id=${ZOO_MY_ID:-}
  is_number "$id" && [ "$id" -ge 1 ] && [ "$id" -le 255 ] || fail "ZOO_MY_ID must be 1-255 with ZOO_SERVERS set, got '$id'"
  for server in $ZOO_SERVERS; do
    [[ "$server" =~ ^server\.[0-9]+=[^=]+:[0-9]+:[0-9]+(\;[0-9]+)?$ ]] \
      || fail "ZOO_SERVERS: '$server' is not server.<id>=<host>:<quorum port>:<election port>[;<client port>]"
    echo "$server" >>"$conf/zoo.cfg"
  done
  grep -q "^server\.$id=" "$conf/zoo.cfg" || fail "ZOO_SERVERS names no server.$id (ZOO_MY_ID)"
  echo "$id" >"$data/myid"
fi

echo "zookeeper-entrypoint: $conf/zoo.cfg:"
sed 's/^/  /' "$conf/zoo.cfg"
exec java -Xmx"${ZOO_HEAP:-256m}" -XX:+UseSerialGC \
  -Dzookeeper.fastleader.maxNotificationInterval=1000 \
  -Dznode.container.checkIntervalMs=1000 \
  -cp "$conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar" \
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$conf/zoo.cfg"
