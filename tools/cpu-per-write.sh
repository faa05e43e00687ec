#!/usr/bin/env bash
# CPU cost per acknowledged write, measured in ways a busy machine does not skew
# (docs/bench.md, "CPU per write, counted"):
#
#   callgrind  user-space instructions per acknowledged write: every node runs under
#              `valgrind --tool=callgrind`; after a warm-up its counters are zeroed
#              (`callgrind_control -z`), a fixed wrk PUT load runs, the counters are
#              dumped (`callgrind_control -d`) and each node's instruction total is
#              divided by the acknowledged writes.
#   ctxsw      context switches per acknowledged write: voluntary + nonvoluntary, summed
#              over every thread of every node (/proc/<pid>/task/*/status), before and
#              after the same load.
#   cputime    CPU microseconds (user + system) per acknowledged write, summed over every
#              node, from /proc/<pid>/stat before and after the load (the issue's measure;
#              unlike the others it grows with the machine's load, so alternate binaries).
#   futex      futex system calls per acknowledged write: `perf stat -e
#              syscalls:sys_enter_futex -p <node>` over the load (a tracepoint count, no
#              ptrace: the nodes run at full speed).
#
# usage: cpu-per-write.sh MODE BIN NODES [SECS=15] [CONNS=16] [WARMUP_SECS=5]
#   MODE   callgrind | ctxsw | cputime | futex
#   BIN    the raftkv binary
#   NODES  1 or 3 (node 1 is made the leader: the others wait longer to campaign)
# Environment: CPU_TIME (cputime mode: all, user or system; default all), NODE_FLAGS (more flags for every node, e.g. "--snapshot-count 100000000"
# to keep snapshots out of the window), PEERS_DIR (holds wrk's put.lua; default ../shared/peers from the
# repository root), PORT_BASE (default 24500), VALUE_BYTES (default 64), KEEP=1 keeps
# the work directory (callgrind dumps: `callgrind_annotate <dump>` shows where the
# instructions went).
# Prints one line per node and a total line.
set -euo pipefail
MODE=$1; BIN=$(realpath "$2"); NODES=$3; SECS=${4:-15}; CONNS=${5:-16}; WARMUP=${6:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS_DIR=${PEERS_DIR:-$HERE/../../shared/peers}
BASE=${PORT_BASE:-24500}
VBYTES=${VALUE_BYTES:-64}
case $MODE in callgrind|ctxsw|cputime|futex) ;; *) echo "unknown mode $MODE" >&2; exit 2;; esac
case $NODES in 1|3) ;; *) echo "NODES must be 1 or 3" >&2; exit 2;; esac
WORK=$(mktemp -d -t cpu-per-write.XXXXXX)
PEERS=""
for i in $(seq 1 "$NODES"); do PEERS="$PEERS${PEERS:+,}http://127.0.0.1:$((BASE+i))"; done
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
for i in $(seq 1 "$NODES"); do
  ticks=10; [ "$i" -gt 1 ] && ticks=40
  args=(--id "$i" --cluster "$PEERS" --port $((BASE+10+i)) --listen-addr 127.0.0.1
        --data-dir "$WORK/n$i" --election-ticks "$ticks" ${NODE_FLAGS:-})
  if [ "$MODE" = callgrind ]; then
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.n$i.%p" \
      "$BIN" "${args[@]}" >"$WORK/n$i.log" 2>&1 &
  else
    "$BIN" "${args[@]}" >"$WORK/n$i.log" 2>&1 &
  fi
  pids+=($!)
done
# The node's own pid (valgrind execs the tool in place, so $! is the node).
ready=0
for _ in $(seq 1 300); do
  curl -s -m 5 -o /dev/null -XPUT -d ready "http://127.0.0.1:$((BASE+11))/bench-ready" || true
  n=0
  for i in $(seq 1 "$NODES"); do
    [ "$(curl -s -m 5 "http://127.0.0.1:$((BASE+10+i))/bench-ready?serializable" || true)" = ready ] && n=$((n+1))
  done
  [ $n = "$NODES" ] && ready=1 && break
  sleep 0.5
done
[ $ready = 1 ] || { echo "cluster never became ready; logs in $WORK" >&2; KEEP=1; exit 1; }
leader=$(curl -s -m 5 "http://127.0.0.1:$((BASE+11))/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])')
[ "$leader" = 1 ] || { echo "node $leader leads, not node 1; run again" >&2; exit 1; }
THREADS=2; [ "$CONNS" -lt 2 ] && THREADS=1
load() { # SECS OUT
  wrk -t$THREADS -c"$CONNS" -d"$1s" --timeout 10s -s "$PEERS_DIR/put.lua" \
    "http://127.0.0.1:$((BASE+11))/" -- "$VBYTES" >"$2" 2>&1
}
load "$WARMUP" "$WORK/warmup.out"
switches() { # PID -> voluntary + nonvoluntary over its threads
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s}'
}
cpu_us() { # PID -> CPU microseconds (fields 14 and 15 of /proc/PID/stat: user, system;
  # CPU_TIME=user or system counts one of them)
  awk -v hz="$(getconf CLK_TCK)" -v which="${CPU_TIME:-all}" '{sub(/.*\) /, "");
    t = which == "user" ? $12 : which == "system" ? $13 : $12 + $13; printf "%d", t * 1000000 / hz}' /proc/"$1"/stat
}
declare -a before
case $MODE in
  cputime) for i in "${!pids[@]}"; do before[$i]=$(cpu_us "${pids[$i]}"); done ;;
  callgrind) for p in "${pids[@]}"; do callgrind_control -z "$p" >/dev/null; done ;;
  ctxsw) for i in "${!pids[@]}"; do before[$i]=$(switches "${pids[$i]}"); done ;;
  futex)
    spids=()
    for i in "${!pids[@]}"; do
      perf stat -x, -e syscalls:sys_enter_futex -o "$WORK/perf.n$((i+1))" -p "${pids[$i]}" &
      spids+=($!)
    done
    sleep 1 ;;
esac
load "$SECS" "$WORK/wrk.out"
declare -a cost
case $MODE in
  callgrind)
    for i in "${!pids[@]}"; do
      callgrind_control -d "${pids[$i]}" >/dev/null
      dump=$(ls -t "$WORK"/cg.n$((i+1)).*.[0-9]* 2>/dev/null | head -1 || true)
      for _ in $(seq 1 60); do [ -n "$dump" ] && grep -q '^totals:' "$dump" && break; sleep 1
        dump=$(ls -t "$WORK"/cg.n$((i+1)).*.[0-9]* 2>/dev/null | head -1 || true); done
      cost[$i]=$(awk '/^totals:/ {print $2}' "$dump")
    done ;;
  ctxsw) for i in "${!pids[@]}"; do cost[$i]=$(( $(switches "${pids[$i]}") - before[$i] )); done ;;
  cputime) for i in "${!pids[@]}"; do cost[$i]=$(( $(cpu_us "${pids[$i]}") - before[$i] )); done ;;
  futex)
    for p in "${spids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${spids[@]}"; do wait "$p" 2>/dev/null || true; done
    for i in "${!pids[@]}"; do
      cost[$i]=$(awk -F, '/sys_enter_futex/ {print $1}' "$WORK/perf.n$((i+1))")
    done ;;
esac
read -r reqs errs non2xx < <(sed -n 's/^requests \([0-9]*\) errors \([0-9]*\) non2xx \([0-9]*\)$/\1 \2 \3/p' "$WORK/wrk.out")
acked=$((reqs - errs - non2xx))
[ "$acked" -gt 0 ] || { echo "no acknowledged writes"; cat "$WORK/wrk.out"; exit 1; }
unit=$MODE; [ "$MODE" = callgrind ] && unit=instructions; [ "$MODE" = ctxsw ] && unit=context_switches; [ "$MODE" = futex ] && unit=futex_calls; [ "$MODE" = cputime ] && unit=cpu_us
total=0
for i in "${!cost[@]}"; do
  total=$((total + cost[$i]))
  echo "node $((i+1)): $unit ${cost[$i]} per_write $(awk -v c="${cost[$i]}" -v a="$acked" 'BEGIN {printf "%.2f", c / a}')"
done
echo "all nodes: $unit $total per_write $(awk -v c="$total" -v a="$acked" 'BEGIN {printf "%.2f", c / a}')  acked $acked errors $errs non2xx $non2xx secs $SECS conns $CONNS nodes $NODES mode $MODE"
