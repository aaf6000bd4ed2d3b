#!/usr/bin/env bash
# bench/haproxy_bench.sh — weft's data plane against HAProxy, side by side on this machine (issue 4).
#
# Starts, on loopback, nginx (1 worker, a 1 KiB file), iperf3 servers and a SHA-256 sink on
# 127.0.0.1, and in front of them: HAProxy one hop (127.0.81.1), HAProxy two hops plaintext
# (127.0.82.1 -> .2), HAProxy two hops with mutual TLS 1.3 between them (127.0.83.1 -> .2; certs
# made with openssl in the temp dir), and two weft agents (127.0.80.1 with the upstreams, 127.0.80.2
# with the services). Each metric runs on every path in turn (interleaved rounds) and the summary
# prints each path, weft ÷ HAProxy-TLS and the targets. The work is done by bench/proxy_bench.py
# (Python 3, stdlib only); this wrapper installs what is missing, finds the weft binary, gives the
# driver a work dir and cleans up behind it.
#
#   bench/haproxy_bench.sh [options]
#     --weft PATH          weft binary (default: build/bench, build/release, build/ under the repo)
#     --paths LIST         direct,haproxy1,haproxy2,haproxy2tls,weft (default: all)
#     --quick              1 round of 3 s runs, 200 idle connections, 8 MiB checks (~2 min)
#     --rounds N           interleaved rounds (3; ~4.7 min each, ~15 min in all); --duration S per run (10)
#     --idle-conns N       idle proxied connections for the memory figure (1000)
#     --check-mib N        size of the byte-exact download and upload (64)
#     --json FILE          write every figure (and every run) as JSON
#     --keep-logs DIR      keep the logs and configs (haproxy, nginx, weft agents, wrk/iperf3 output)
#   (proxy_bench.py --help lists the rest.)
#
# Needs root (nginx runs its worker as root so it can read the temp dir; packages). Everything it
# starts is killed on exit, Ctrl-C included, and its temp dir (certs, keys, files) removed.
# Nothing else is touched.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

args=()
weft=""
want_weft=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --weft) weft=$2; shift 2 ;;
    --paths) case ",$2," in *,weft,*) ;; *) want_weft=0 ;; esac; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "haproxy_bench: needs root (packages, nginx worker user, open files limit)" >&2
  exit 2
fi

py=/usr/bin/python3
need=()
[ -x "$py" ] || need+=(python3)
command -v haproxy >/dev/null || need+=(haproxy)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "haproxy_bench: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2; }
  # Debian starts the packaged services on install; they would compete for the CPU
  for s in haproxy nginx iperf3; do
    case " ${need[*]} " in *" $s "*|*" $s-light "*) systemctl stop "$s" 2>/dev/null || true ;; esac
  done
fi

if [ $want_weft = 1 ]; then
  if [ -z "$weft" ]; then
    for c in "$root/build/bench/cli/weft" "$root/build/release/cli/weft" "$root/build/cli/weft"; do
      if [ -x "$c" ]; then weft=$c; break; fi
    done
  fi
  if [ -z "$weft" ] || [ ! -x "$weft" ]; then
    echo "haproxy_bench: weft binary not found; build it (or run with --paths direct,haproxy1,haproxy2,haproxy2tls):" >&2
    echo "  cmake --preset release && cmake --build build/release -j1 --target weft" >&2
    exit 2
  fi
  args=(--weft "$weft" "${args[@]}")
fi

# 1000 idle connections through a two-hop path hold ~5000 descriptors across the processes; each
# haproxy asks for 2 x maxconn (5000) + a few
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/proxybench.XXXXXX)
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
  # Backstop if the driver could not clean up: the process groups it recorded (pid + start time,
  # so a reused pid is left alone; each was started as its own session leader).
  if [ -s "$pidfile" ]; then
    while read -r pid start; do
      [ -r "/proc/$pid/stat" ] || continue
      now=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $20}')
      if [ "$now" = "$start" ]; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    done <"$pidfile"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The driver runs in the background so that a signal to this shell runs the trap at once (bash
# defers traps while a foreground child runs); the trap then stops the driver (SIGTERM: it kills
# what it started and removes its files itself).
"$py" "$here/proxy_bench.py" --workdir "$work/run" --pidfile "$pidfile" "${args[@]}" &
child=$!
set +e
wait "$child"
rc=$?
set -e
child=""
exit "$rc"
