# Shared helpers for the scripts: start and stop the local Redis and MongoDB-wire servers.
# shellcheck shell=bash

# wait_for_port PORT [SECONDS]
wait_for_port() {
  local port=$1 deadline=$((SECONDS + ${2:-20}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "nothing listens on port $port" >&2
      return 1
    fi
    sleep 0.1
  done
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_redis PORT DIR: redis-server in the background with persistence off; prints its pid.
start_redis() {
  local port=$1 dir=$2
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd) # redis-server changes into --dir before opening --logfile
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" >/dev/null 2>&1 &
  echo $!
  wait_for_port "$port"
}

# start_mongo PORT DIR: the MongoDB-wire dev server (briskdb) in the background; prints its pid.
start_mongo() {
  local port=$1 dir=$2
  mkdir -p "$dir"
  .venv/bin/python scripts/mongo-wire-server.py "$dir/db" "$port" >"$dir/mongo.log" 2>&1 &
  echo $!
  wait_for_port "$port"
}
