#!/usr/bin/env bash
# bench/serf_bench.sh — weft agents against Serf agents, side by side on this machine (issue 3).
#
# Starts real `weft agent` processes on 127.70.x.y:7946 and `serf agent` processes on
# 127.71.x.y:7946 (RPC :7373), one cluster at a time, and prints per N each metric for weft, Serf
# and weft ÷ Serf, with the targets. The work is done by bench/mesh_bench.py (Python 3, pyzmq,
# msgpack); this wrapper installs what is missing, finds the weft binary, gives the driver a work
# dir and cleans up behind it.
#
#   bench/serf_bench.sh [options]
#     --weft PATH          weft binary (default: build/bench, build/release, build/ under the repo)
#     --n LIST             cluster sizes, e.g. 32,64 (default 32,64); --quick = --n 8 and few runs
#     --phases LIST        crash,leave,join,idle,stall (default) and/or loss (netns, 10 % loss, slow)
#     --systems LIST       weft,serf (default) or one of them
#     --crash-runs K       kill -9 runs per N and system (5)
#     --leave-runs K       graceful leaves for weft (50); --serf-leave-runs K for Serf (10)
#     --join-runs K        mass joins for weft (20); --serf-join-runs K for Serf (5)
#     --stall-runs K       SIGSTOP 2.5 s runs (3); --stall-seconds S, --stall-watch S (15)
#     --idle-seconds S     idle window (60); --idle-settle S quiet time before it (135)
#     --loss-minutes M     loss phase length per system (10); --loss-n N (32); --loss-pct P (10)
#     --poll-ms MS         members poll period per agent (20)
#     --json FILE          write every figure (and every run) as JSON
#     --keep-logs DIR      keep the agents' logs
#     --seed S             victim choice (1)
#   (mesh_bench.py --help lists the rest: timeouts, per-phase budget, settle times.)
#
# Needs root (nftables counters, network namespaces). Everything it starts is killed on exit,
# Ctrl-C included; its nft table (inet meshbench_PID), netns (meshbench_PID) and temp dir are
# removed. Nothing else is touched.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }

args=()
weft=""
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --weft) weft=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "serf_bench: needs root (nftables counters, network namespaces)" >&2
  exit 2
fi

py=/usr/bin/python3  # Debian's python: python3-zmq and python3-msgpack are installed for it
need=()
[ -x "$py" ] && "$py" -c 'import zmq' 2>/dev/null || need+=(python3-zmq)
[ -x "$py" ] && "$py" -c 'import msgpack' 2>/dev/null || need+=(python3-msgpack)
command -v serf >/dev/null || need+=(serf)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "serf_bench: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2; }
fi

if [ -z "$weft" ]; then
  for c in "$root/build/bench/cli/weft" "$root/build/release/cli/weft" "$root/build/cli/weft"; do
    if [ -x "$c" ]; then weft=$c; break; fi
  done
fi
if [ -z "$weft" ] || [ ! -x "$weft" ]; then
  echo "serf_bench: weft binary not found; build it:" >&2
  echo "  cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_TESTS=OFF && cmake --build build/bench --target weft" >&2
  exit 2
fi

if [ $quick = 1 ]; then
  args=(--n 8 --crash-runs 2 --leave-runs 3 --serf-leave-runs 2 --join-runs 2 --serf-join-runs 1
        --stall-runs 1 --idle-seconds 10 --idle-settle 2 "${args[@]}")
fi

tag="meshbench_$$"
work=$(mktemp -d /tmp/meshbench.XXXXXX)
pidfile="$work/pids"
: >"$pidfile"
child=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$child" 2>/dev/null || true
  fi
  # Backstop if the driver could not clean up: processes it recorded (pid + start time, so a
  # reused pid is left alone), then its nft table and netns.
  if [ -s "$pidfile" ]; then
    while read -r pid start; do
      [ -r "/proc/$pid/stat" ] || continue
      now=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $20}')
      [ "$now" = "$start" ] && kill -KILL "$pid" 2>/dev/null || true
    done <"$pidfile"
  fi
  if ip netns list 2>/dev/null | grep -qw "$tag"; then
    for pid in $(ip netns pids "$tag" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$tag" 2>/dev/null || true
  fi
  nft list table inet "$tag" >/dev/null 2>&1 && nft delete table inet "$tag" 2>/dev/null || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The driver runs in the background so that a signal to this shell runs the trap at once (bash
# defers traps while a foreground child runs); the trap then stops the driver (SIGTERM: it kills
# its agents and removes its table and netns itself).
"$py" "$here/mesh_bench.py" --weft "$weft" --workdir "$work/run" --tag "$tag" --pidfile "$pidfile" "${args[@]}" &
child=$!
set +e
wait "$child"
rc=$?
set -e
child=""
exit "$rc"
