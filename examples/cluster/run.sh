#!/usr/bin/env bash
# Starts a Solo cluster on loopback: three NATS servers (JetStream, every write synced)
# and three `solo server` nodes sharing one CA and one master key. Every node serves the
# tenants placed on it (a tenant's first request places it on the node it reaches) and
# forwards the other tenants' requests to theirs; when a node stops, its tenants move to
# the others. (`mode = "active"` in [cluster] instead: one node serves everything, the
# others stand by.) Everything lives in DIR (default ./solo-cluster); ctrl-c stops it all.
#
#   bash examples/cluster/run.sh [DIR]
#
# Then, from the repository: `./target/release/solo --data-dir DIR/a list` (or b, c for
# any node: each answers for every tenant). Ports: NATS clients 14222-14224, routes 16222-16224,
# monitoring 18222-18224; Solo gRPC 50061-50063, HTTPS 8061-8063, metrics (plaintext,
# every node) 9061-9063: `curl -s 127.0.0.1:9062/metrics | grep cluster`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$(mkdir -p "${1:-./solo-cluster}" && cd "${1:-./solo-cluster}" && pwd)"
nats="$(bash "$repo/crates/solo-cluster/nats/install.sh" "$repo/target/tmp/nats-venv")"
solo="${CLUSTER_SOLO_BIN:-$repo/target/release/solo}"
[ -x "$solo" ] || (cd "$repo" && cargo build --release -p solo)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

routes="nats-route://127.0.0.1:16222, nats-route://127.0.0.1:16223, nats-route://127.0.0.1:16224"
for i in 1 2 3; do
    cat > "$dir/nats-$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:1422$((i + 1))
http: 127.0.0.1:1822$((i + 1))
cluster { name: solo, listen: 127.0.0.1:1622$((i + 1)), routes: [$routes] }
jetstream { store_dir: "$dir/nats-$i", sync_interval: always }
CONF
    "$nats" -c "$dir/nats-$i.conf" 2> "$dir/nats-$i.log" &
    pids+=($!)
done

# Runs node $1, and starts it again whenever it exits with status 3 (it lost its lease:
# paused, or cut off from NATS): it comes back and serves again. Any other exit ends it.
supervise() {
    local node=$1 child status
    trap 'kill "$child" 2>/dev/null; exit 0' TERM INT
    while true; do
        "$solo" server --config "$dir/$node.toml" --data-dir "$dir/$node" \
            >> "$dir/$node.out" 2>> "$dir/$node.log" &
        child=$!
        status=0
        wait "$child" || status=$?
        [ "$status" = 3 ] || exit "$status"
        echo "node $node lost its lease; starting it again" >&2
    done
}

: > "$dir/a.out"
n=0
for node in a b c; do
    n=$((n + 1))
    mkdir -p "$dir/$node"
    cat > "$dir/$node.toml" <<CONF
grpc_addr = "127.0.0.1:5006$n"
http_addr = "127.0.0.1:806$n"
metrics_addr = "127.0.0.1:906$n"
[cluster]
nats_urls = ["nats://127.0.0.1:14222", "nats://127.0.0.1:14223", "nats://127.0.0.1:14224"]
monitor_urls = ["http://127.0.0.1:18222", "http://127.0.0.1:18223", "http://127.0.0.1:18224"]
node_id = "$node"
[service_defaults]
# An awake service's state is saved 5 s after its messages: the node a tenant moves to
# after a kill -9 restores it from there.
checkpoint_every_ms = 5000
CONF
    if [ "$node" != a ]; then
        # One identity across nodes: the CA, the certificates and the master key of a.
        cp -r "$dir/a/certs" "$dir/$node/"
        cp "$dir/a/master.key" "$dir/$node/"
    fi
    supervise "$node" &
    pids+=($!)
    if [ "$node" = a ]; then
        # a creates the certificates and the key on its first start.
        for _ in $(seq 1 600); do
            grep -q "grpc listening" "$dir/a.out" 2>/dev/null && break
            sleep 0.1
        done
        grep -q "grpc listening" "$dir/a.out" || { cat "$dir/a.log"; exit 1; }
    fi
done
echo "solo cluster in $dir: nodes a, b and c serving (gRPC 127.0.0.1:50061-50063)"
echo "try: $solo --data-dir $dir/a deploy $repo/examples/js/counter.js (placed on a)"
echo "then kill node a (its pid is in $dir/a/server.json) and call through b or c,"
echo "or name every node: SOLO_ENDPOINT=127.0.0.1:50061,127.0.0.1:50062,127.0.0.1:50063"
echo "(with --data-dir $dir/b for the admin's certificate); solo health lists the nodes"
# Runs until ctrl-c: a node killed to watch its tenants move does not stop the rest.
wait
