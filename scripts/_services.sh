# Throwaway PostgreSQL and Redis servers on loopback for the test suite, removed on exit.
# Exports FINCONN_TEST_POSTGRES_URL and FINCONN_TEST_REDIS_URL.
services_dir=$(mktemp -d /tmp/finconn-services.XXXXXX)
chmod 755 "$services_dir"
_cleanup_services() {
  if [ -n "${_pg_data:-}" ] && [ -f "$_pg_data/postmaster.pid" ]; then
    runuser -u postgres -- "$_pg_bin/pg_ctl" -D "$_pg_data" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "${_redis_pid:-}" ]; then kill "$_redis_pid" 2>/dev/null || true; fi
  rm -rf "$services_dir"
}
trap _cleanup_services EXIT

_free_port() {
  .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
  _pg_bin=$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n 1)")
  _pg_data="$services_dir/pg"
  local port; port=$(_free_port)
  mkdir -p "$_pg_data"
  if [ "$(id -u)" = 0 ]; then chown postgres "$_pg_data"; run=(runuser -u postgres --); else run=(); fi
  "${run[@]}" "$_pg_bin/initdb" -D "$_pg_data" -U postgres -A trust --no-sync >/dev/null
  "${run[@]}" "$_pg_bin/pg_ctl" -D "$_pg_data" -w -l "$_pg_data/log" \
    -o "-p $port -k $_pg_data -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
  "$_pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres finconn_test
  export FINCONN_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/finconn_test"
  echo "PostgreSQL on 127.0.0.1:$port" >&2
}

start_redis() {
  local port; port=$(_free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
  _redis_pid=$!
  # The suite starts only once Redis answers PING (polled for up to 20 s).
  local reply="" tries=0
  until [ "$reply" = "+PONG" ]; do
    kill -0 "$_redis_pid" 2>/dev/null || { echo "error: redis-server exited at start; run 'redis-server --port $port' to see why." >&2; exit 1; }
    if ((tries++ >= 200)); then echo "error: Redis on 127.0.0.1:$port did not answer PING within 20 s." >&2; exit 1; fi
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'PING\r\n' >&3 && IFS= read -r -t 1 line <&3 && printf '%s' "${line%$'\r'}") 2>/dev/null || true)
    [ "$reply" = "+PONG" ] || sleep 0.1
  done
  export FINCONN_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  echo "Redis on 127.0.0.1:$port" >&2
}
