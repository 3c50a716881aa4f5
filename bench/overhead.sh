#!/usr/bin/env bash
# Gateway overhead: the same open-loop load at fixed rates, straight to a simulated engine
# with the zero-cost profile, then through the gateway in front of it. Reports p50/p99
# end-to-end latency both ways, the difference (what the gateway adds), and the gateway's
# CPU seconds per second of load (from /proc). Loopback only; every run is bounded.
#
#   bash bench/overhead.sh [RATES...]        default: 1000 3000 5000 requests/s, 10 s each
#   OVERHEAD_REDIS=redis://127.0.0.1:6379 bash bench/overhead.sh 5000
#                                            the same with the replicas' shared store on
#
# Everything runs on this machine: the load generator, the gateway and the engine share
# its cores, so at high rates the numbers include contention between them.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${*:-1000 3000 5000}
SECS=${OVERHEAD_SECS:-10}
OUT=${OVERHEAD_OUT:-bench/out/overhead}
mkdir -p "$OUT"
cargo build --release --quiet --bin inferplane
BIN=target/release/inferplane

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port); GW_PORT=$(free_port)
cat > "$OUT/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
[[pools]]
model = "m"
max_inflight = 4096
[[pools.instances]]
id = "sim"
url = "http://127.0.0.1:$SIM_PORT"
TOML
if [ -n "${OVERHEAD_REDIS:-}" ]; then
  printf '[shared]\nredis = "%s"\nreplica_id = "overhead"\nperiod = "%s"\nfallback_after = "5s"\n' \
    "$OVERHEAD_REDIS" "${OVERHEAD_REDIS_PERIOD:-100ms}" >> "$OUT/gateway.toml"
fi

$BIN sim --port "$SIM_PORT" --model m --profile zero > "$OUT/sim.log" 2>&1 &
SIM_PID=$!
$BIN serve --config "$OUT/gateway.toml" > "$OUT/gateway.log" 2>&1 &
GW_PID=$!
trap 'kill $SIM_PID $GW_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$GW_PORT/admin/instances" | grep -q '"ready":true' && break
  sleep 0.1
done

cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

run() { # label target rate
  local n=$(( $3 * SECS ))
  $BIN bench run --target "$2" --model m --workload bench/overhead-workload.toml \
    --rate "$3" --requests "$n" --duration "${SECS}s" --timeout 10s --quiet \
    --label "$1" --out "$OUT/$1-$3" > "$OUT/$1-$3.log" 2>&1
}

printf '%-6s %-8s %10s %10s %10s %10s %8s %12s\n' rate path p50_ms p99_ms ok errors rps "gw_cpu/s"
for rate in $RATES; do
  run direct "http://127.0.0.1:$SIM_PORT" "$rate"
  before=$(cpu_secs $GW_PID); t0=$(date +%s.%N)
  run gateway "http://127.0.0.1:$GW_PORT" "$rate"
  after=$(cpu_secs $GW_PID); t1=$(date +%s.%N)
  python3 - "$OUT" "$rate" "$before" "$after" "$t0" "$t1" <<'PY'
import json, sys
out, rate, b, a, t0, t1 = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
rows = {}
for path in ("direct", "gateway"):
    r = json.load(open(f"{out}/{path}-{rate}/report.json"))[0]
    rows[path] = r
    cpu = f"{(a - b) / (t1 - t0):.2f}" if path == "gateway" else "-"
    print(f"{rate:<6} {path:<8} {r['e2e_ms']['p50']:>10.3f} {r['e2e_ms']['p99']:>10.3f} "
          f"{r['completed']:>10} {r['failed'] + r['rejected']:>10} {r['throughput_rps']:>8.0f} {cpu:>12}")
d, g = rows["direct"]["e2e_ms"], rows["gateway"]["e2e_ms"]
print(f"{rate:<6} {'added':<8} {g['p50'] - d['p50']:>10.3f} {g['p99'] - d['p99']:>10.3f}")
PY
done
