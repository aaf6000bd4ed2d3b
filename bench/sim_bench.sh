#!/usr/bin/env bash
# bench/sim_bench.sh — the simulator benchmark behind docs/benchmarks.md.
#
# Runs `weft sim --json` (120 simulated seconds each) for:
#   N = 100, 1000, 5000 (and 10 000 with --with-10k), 1 % loss, 1 crash     weft defaults
#   N = 1000, 5 % loss, 1 crash + 1 node stalled for 5 s                     weft defaults
#   N = 1000, 1 % loss, 1 crash                                              memberlist DefaultLANConfig
# and prints one table plus the ratio weft detect_all / memberlist-defaults detect_all.
#
#   bench/sim_bench.sh [--weft PATH] [--seed S] [--quick] [--with-10k] [-- extra weft sim flags]
#     --quick      skip N = 5000 (about 3.5 minutes of the ~4 on 2 cores)
#     --with-10k   add N = 10 000 (~14 GB of memory, ~12 minutes)
#
# Needs only bash, grep and awk. Exit status: non-zero if a run failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
weft=""
seed=1
quick=0
with_10k=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --weft) weft=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --with-10k) with_10k=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "sim_bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$weft" ]; then
  for candidate in "$root/build/release/cli/weft" "$root/build/cli/weft"; do
    if [ -x "$candidate" ]; then weft=$candidate; break; fi
  done
fi
if [ -z "$weft" ] || [ ! -x "$weft" ]; then
  echo "sim_bench: weft binary not found; build it (cmake --preset release && cmake --build build/release --target weft) or pass --weft PATH" >&2
  exit 2
fi

# field NAME JSON: a top-level number (or null) from weft's one-line JSON.
field() { grep -o "\"$1\":[^,}]*" <<<"$2" | head -1 | cut -d: -f2; }
fmt() {  # seconds or counts, "-" for null
  if [ -z "$1" ] || [ "$1" = null ]; then printf -- "-"; else awk -v v="$1" 'BEGIN { printf (v == int(v) ? "%d" : "%.2f"), v }'; fi
}

printf "%-22s %6s %5s %8s %8s %8s %4s %8s %8s %7s %9s %7s %7s\n" \
  case nodes loss join_s det_1st det_all fp dis9999 dis_all msg/n/s bytes/n/s wall_s rss_MiB
failed=0
weft_detect=""
ml_detect=""
run() {  # run LABEL weft-sim-flags...
  local label=$1; shift
  local out
  if ! out=$("$weft" sim --json --seed "$seed" --duration 120 "$@" "${extra[@]}"); then
    printf "%-22s failed: weft sim %s\n" "$label" "$*"
    failed=1
    return
  fi
  printf "%-22s %6s %5s %8s %8s %8s %4s %8s %8s %7s %9s %7s %7s\n" "$label" \
    "$(field nodes "$out")" "$(field loss "$out")" "$(fmt "$(field join_converged_s "$out")")" \
    "$(fmt "$(field detect_first_s "$out")")" "$(fmt "$(field detect_all_s "$out")")" \
    "$(field false_positives "$out")" "$(fmt "$(field dissemination_p9999_s "$out")")" \
    "$(fmt "$(field dissemination_all_s "$out")")" "$(fmt "$(field msgs_per_node_per_s "$out")")" \
    "$(awk -v v="$(field bytes_per_node_per_s "$out")" 'BEGIN { printf "%.0f", v }')" \
    "$(fmt "$(field wall_s "$out")")" "$(awk -v v="$(field peak_rss_mib "$out")" 'BEGIN { printf "%.0f", v }')"
  case "$label" in
    weft-1000-crash) weft_detect=$(field detect_all_s "$out") ;;
    memberlist-1000-crash) ml_detect=$(field detect_all_s "$out") ;;
  esac
}

run weft-100-crash --nodes 100 --loss 0.01 --fail 1
run weft-1000-crash --nodes 1000 --loss 0.01 --fail 1
[ "$quick" = 1 ] || run weft-5000-crash --nodes 5000 --loss 0.01 --fail 1
[ "$with_10k" = 0 ] || run weft-10000-crash --nodes 10000 --loss 0.01 --fail 1
run weft-1000-loss5-stall --nodes 1000 --loss 0.05 --fail 1 --stall 1 --stall-for 5
run memberlist-1000-crash --nodes 1000 --loss 0.01 --fail 1 --profile memberlist

if [ -n "$weft_detect" ] && [ -n "$ml_detect" ] && [ "$weft_detect" != null ] && [ "$ml_detect" != null ]; then
  awk -v w="$weft_detect" -v m="$ml_detect" \
    'BEGIN { printf "ratio detect_all weft / memberlist-defaults (N=1000, 1 %% loss): %.2f (%.2f s / %.2f s)\n", w / m, w, m }'
else
  echo "ratio detect_all weft / memberlist-defaults: n/a (a run did not detect the crash)"
fi
exit "$failed"
