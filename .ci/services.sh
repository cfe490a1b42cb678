#!/usr/bin/env bash
# Start throwaway PostgreSQL and Redis servers on loopback for the tests, and print the
# environment variables that point the test suite at them. Usage: eval "$(.ci/services.sh)"
# PostgreSQL comes with a streaming replica of itself (the read replica's tests), unless
# PG_REPLICA_PORT is set empty.
set -euo pipefail
PG_PORT=${PG_PORT:-55432}
PG_REPLICA_PORT=${PG_REPLICA_PORT-55433}
REDIS_PORT=${REDIS_PORT:-56379}
RUN_DIR=${RUN_DIR:-/tmp/gateway-ci}
mkdir -p "$RUN_DIR"
chmod 777 "$RUN_DIR"

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -n "$PG_BIN" ]; then
  PGDATA="$RUN_DIR/pgdata"
  PGREPLICA="$RUN_DIR/pgreplica"
  NEW_PRIMARY=no
  if ! su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $PGDATA status" >/dev/null 2>&1; then
    NEW_PRIMARY=yes
    rm -rf "$PGDATA"
    su postgres -s /bin/sh -c "$PG_BIN/initdb -D $PGDATA -U postgres -A trust -E UTF8 >/dev/null"
    su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $PGDATA -l $RUN_DIR/pg.log -w \
      -o '-p $PG_PORT -h 127.0.0.1 -k $RUN_DIR -c fsync=off -c max_connections=300' start >/dev/null"
  fi
  echo "export GATEWAY_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:$PG_PORT/postgres"

  # The replica: a base backup of the primary (initdb -A trust allows replication from
  # 127.0.0.1; wal_level=replica is the default) that streams from it (-R writes
  # primary_conninfo and standby.signal). A replica of an earlier primary cannot follow a new
  # one, so it is rebuilt whenever the primary is. A hot standby needs max_connections at
  # least the primary's.
  if [ -n "$PG_REPLICA_PORT" ]; then
    if [ "$NEW_PRIMARY" = yes ] \
        || ! su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $PGREPLICA status" >/dev/null 2>&1; then
      su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $PGREPLICA -m immediate stop" \
        >/dev/null 2>&1 || true
      rm -rf "$PGREPLICA"
      su postgres -s /bin/sh -c "$PG_BIN/pg_basebackup -h 127.0.0.1 -p $PG_PORT -U postgres \
        -D $PGREPLICA -R -X stream -c fast"
      su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $PGREPLICA -l $RUN_DIR/pgreplica.log -w \
        -o '-p $PG_REPLICA_PORT -h 127.0.0.1 -k $RUN_DIR -c fsync=off \
        -c max_connections=300' start >/dev/null"
    fi
    echo "export GATEWAY_TEST_POSTGRES_READ_URL=postgresql+asyncpg://postgres@127.0.0.1:$PG_REPLICA_PORT/postgres"
  fi
fi

if command -v redis-server >/dev/null; then
  if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize yes --logfile "$RUN_DIR/redis.log" >/dev/null
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  echo "export GATEWAY_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
  echo "export GATEWAY_TEST_REDIS_PORT=$REDIS_PORT"
fi
