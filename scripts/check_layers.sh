#!/usr/bin/env bash
# scripts/check_layers.sh — enforces the module layering of STYLE.md and keeps the pure modules pure.
#  (a) a module's files (include/ and src/) may include only its own headers and those of the modules
#      its row lists: #include "weft/<module>/...".
#  (b) the banned groups of a module's row must not appear in its code (comments and string
#      literals are ignored).
# A directory with include/weft/ that has no row fails the check: a new module adds its row here.
# Prints each offending line and exits 1; prints one line and exits 0 when all is well.
set -euo pipefail
cd "$(dirname "$0")/.."

# module     | may include (besides itself)   | banned groups
table='
base         | -                              | clock rng
gossip       | base                           | net thread clock rng file io
transport    | base                           |
store        | base                           |
sim          | base gossip                    |
agent        | base gossip transport store    |
cli          | base gossip sim agent          |
'

# Banned groups: "group<TAB>what<TAB>extended regex" (POSIX ERE, as mawk and gawk read it).
# Calls are matched only when not preceded by a letter, digit, '_', '.' or '>' so that names
# like next_time( or msg.time( stay allowed.
NC='(^|[^[:alnum:]_.>])'
patterns="
net	socket header	#[[:space:]]*include[[:space:]]*<(sys/socket|sys/un|netdb|poll|sys/poll|sys/epoll|sys/select|ifaddrs|net/if)\.h>
net	socket header	#[[:space:]]*include[[:space:]]*<(netinet|arpa|linux)/
net	socket library	#[[:space:]]*include[[:space:]]*<(zmq\.h|zmq\.hpp|zmq_addon\.hpp|boost/asio)
net	socket call	${NC}(sendto|recvfrom|sendmsg|recvmsg|setsockopt)[[:space:]]*\(
thread	thread header	#[[:space:]]*include[[:space:]]*<(thread|mutex|shared_mutex|atomic|future|condition_variable|semaphore|stop_token|barrier|latch|pthread\.h)>
thread	thread use	std::(this_thread|thread|jthread|async|mutex)([^[:alnum:]_]|$)
thread	sleep	${NC}(sleep|usleep|nanosleep|sleep_for|sleep_until)[[:space:]]*\(
clock	clock read	::now[[:space:]]*\(
clock	wall clock	(system_clock|high_resolution_clock|gettimeofday|clock_gettime|timespec_get)
clock	clock read	${NC}time[[:space:]]*\([[:space:]]*(nullptr|NULL|0|&)
clock	clock read	${NC}clock[[:space:]]*\([[:space:]]*\)
clock	clock header	#[[:space:]]*include[[:space:]]*<(ctime|time\.h|sys/time\.h)>
rng	global RNG	(random_device|default_random_engine)
rng	global RNG	${NC}(rand|srand|random|srandom|rand_r|drand48|srand48|arc4random|getrandom)[[:space:]]*\(
file	file access	#[[:space:]]*include[[:space:]]*<(fstream|filesystem|fcntl\.h|unistd\.h|sys/stat\.h|dirent\.h)>
file	file access	${NC}(fopen|freopen|fdopen|popen|tmpfile|openat|creat)[[:space:]]*\(
io	console output	#[[:space:]]*include[[:space:]]*<iostream>
io	console output	std::(cout|cerr|clog)([^[:alnum:]_]|$)
io	console output	${NC}(printf|fprintf|puts|fputs|fwrite|perror)[[:space:]]*\(
"

modules=$(awk -F'|' 'NF == 3 { gsub(/[[:space:]]/, "", $1); print $1 }' <<<"$table")
status=0

# Every module directory must have a row.
for inc in */include/weft; do
  [ -d "$inc" ] || continue
  dir=${inc%%/*}
  if ! grep -qx "$dir" <<<"$modules"; then
    echo "check_layers: module '$dir' has no row in the table of scripts/check_layers.sh"
    status=1
  fi
done

files=()
for m in $modules; do
  [ -d "$m" ] || continue
  while IFS= read -r -d '' f; do files+=("$f"); done < <(
    find "$m" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' -o -name '*.ipp' \
      -o -name '*.inc' \) -print0)
done
[ ${#files[@]} -gt 0 ] || { echo "check_layers: no source files found" >&2; exit 1; }

# Passed through the environment: awk -v would eat the backslashes of the regexes.
WEFT_LAYER_TABLE=$table WEFT_LAYER_PATTERNS=$patterns LC_ALL=C awk '
BEGIN {
  nrows = split(ENVIRON["WEFT_LAYER_TABLE"], rows, "\n")
  for (i = 1; i <= nrows; i++) {
    if (split(rows[i], col, "|") != 3) continue
    mod = col[1]; gsub(/[[:space:]]/, "", mod)
    n = split(col[2], deps, " ")
    for (j = 1; j <= n; j++) if (deps[j] != "-") allowed[mod, deps[j]] = 1
    n = split(col[3], groups, " ")
    for (j = 1; j <= n; j++) banned[mod, groups[j]] = 1
  }
  npat = 0
  nrows = split(ENVIRON["WEFT_LAYER_PATTERNS"], rows, "\n")
  for (i = 1; i <= nrows; i++) {
    if (split(rows[i], col, "\t") != 3) continue
    npat++; pgroup[npat] = col[1]; pwhat[npat] = col[2]; pre[npat] = col[3]
  }
  bad = 0
}
FNR == 1 { in_block = 0; mod = FILENAME; sub(/\/.*/, "", mod) }
{
  # Strip comments (block comments span lines) and keep two views of the code: "code" with string
  # literals, for #include lines, and "bare" without them, for everything else.
  line = $0; code = ""; bare = ""
  if (!in_block && line !~ /[\/"\047]/) { code = line; bare = line }
  else {
    quote = ""; n = length(line)
    for (i = 1; i <= n; i++) {
      c = substr(line, i, 1); c2 = substr(line, i, 2)
      if (in_block) { if (c2 == "*/") { in_block = 0; i++ }; continue }
      if (quote != "") {
        code = code c
        if (c == "\\") { code = code substr(line, i + 1, 1); i++ }
        else if (c == quote) { quote = ""; bare = bare c }
        continue
      }
      if (c2 == "//") break
      if (c2 == "/*") { in_block = 1; i++; code = code " "; bare = bare " "; continue }
      # A quote after a letter or digit is a digit separator (1\0470000) or a u8/L prefix.
      if (c == "\"" || (c == "\047" && (i == 1 || substr(line, i - 1, 1) !~ /[[:alnum:]]/))) {
        quote = c; code = code c; bare = bare c; continue
      }
      code = code c; bare = bare c
    }
  }
  if (code ~ /^[[:space:]]*$/) next
  view = (code ~ /^[[:space:]]*#/) ? code : bare

  if (match(code, /^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]weft\/[A-Za-z0-9_]+\//)) {
    dep = substr(code, RSTART, RLENGTH); sub(/.*weft\//, "", dep); sub(/\/$/, "", dep)
    if (dep != mod && !((mod, dep) in allowed)) {
      report(mod " must not include weft/" dep "/")
    }
  }
  for (p = 1; p <= npat; p++) {
    if (((mod, pgroup[p]) in banned) && view ~ pre[p]) report(pwhat[p] " in " mod "/ (" pgroup[p] ")")
  }
}
function report(why,    text) {
  text = $0; sub(/^[[:space:]]+/, "", text)
  printf "%s:%d: %s: %s\n", FILENAME, FNR, why, text
  bad++
}
END {
  if (bad) { printf "check_layers: %d problem(s); the rules are in scripts/check_layers.sh\n", bad; exit 1 }
}
' "${files[@]}" || status=1

if [ "$status" = 0 ]; then
  echo "check_layers: ok (${#files[@]} files)"
fi
exit "$status"
