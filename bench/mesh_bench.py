#!/usr/bin/python3
"""bench/mesh_bench.py - weft agents against Serf agents, side by side, on loopback.

Driven by bench/serf_bench.sh (which installs the packages, finds the binaries and cleans up
behind a crashed driver); it also runs on its own:

  bench/mesh_bench.py --weft build/bench/cli/weft [--n 32,64] [--phases crash,leave,join,idle,stall]

For each N and each system (weft first, then Serf; one cluster runs at a time), on 127.70.x.y
(weft) and 127.71.x.y (Serf, RPC on :7373), gossip port 7946:

  crash  kill -9 one random agent (never the seed); time until EVERY other agent's "members"
         shows it "failed" (all agents polled every --poll-ms). Victim restarted between runs.
  leave  RPC "leave" to one random agent; time until every other agent shows it "left"; a run
         fails if any agent ever showed it "failed". Agent restarted between runs.
  stall  SIGSTOP one agent for --stall-seconds, SIGCONT, watch --stall-watch s more: members that
         any agent marked "failed" (the target is none).
  idle   --idle-seconds without RPC traffic after --idle-settle s: RSS, RssAnon (/proc/PID/status),
         CPU % of a core (utime+stime from /proc/PID/stat), gossip traffic per member per s from
         nftables counters (IP packet bytes on the gossip port, UDP + TCP, each packet counted once
         on the output hook); for weft also the payload bytes from "info" stats.gossip.bytes_sent.
  join   fresh data dirs, N agents started without a seed (each answers RPC), then "join <seed>" sent
         to all N-1 at once; time until every agent sees N alive. Everything is killed after a run.
  loss   (not in the default phases) re-runs this script inside a network namespace whose loopback
         drops --loss-pct % of the gossip packets (nft numgen, input hook: the sender does not
         notice): N = --loss-n, --loss-minutes of watching for false "failed" marks, and traffic
         (counted on output, i.e. offered, before the drop) against a loss-free baseline.

Every process it starts is killed at exit (also on SIGINT/SIGTERM/SIGHUP), its nft table and netns
are deleted and its work dir removed. PIDs go to WORKDIR/pids ("pid starttime" lines) so the shell
wrapper can kill leftovers if this process itself is killed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import msgpack
    import zmq
except ImportError as e:  # pragma: no cover
    sys.exit(f"mesh_bench: {e}: apt-get install -y python3-zmq python3-msgpack (run bench/serf_bench.sh)")

PORT = 7946
SERF_RPC_PORT = 7373
CLK_TCK = os.sysconf("SC_CLK_TCK")
PREFIX = {"weft": 70, "serf": 71}
MIB = 1024.0 * 1024.0


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def ip_of(system, i):
    return f"127.{PREFIX[system]}.{i // 250}.{i % 250 + 1}"


def name_of(i):
    return f"n{i:03d}"


class PhaseError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# processes


def proc_starttime(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def proc_mem_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


class Registry:
    """Every process we start; killed (SIGKILL) at cleanup."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.procs = []

    def spawn(self, argv, logpath, **kw):
        with open(logpath, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, **kw)
        self.procs.append(p)
        st = proc_starttime(p.pid)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {st}\n")
        return p

    def reap(self):
        self.procs = [p for p in self.procs if p.poll() is None]

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []


# ---------------------------------------------------------------------------------------------
# RPC probes: one outstanding "members" request per agent, polled from one zmq.Poller loop


REQ_MEMBERS = msgpack.packb({"v": 1, "method": "members", "params": {}})


def unpack(b):
    return msgpack.unpackb(b, raw=False, unicode_errors="surrogateescape", strict_map_key=False)


class WeftProbe:
    def __init__(self, ctx, path):
        self.ctx, self.path = ctx, path
        self.sock = None
        self.inflight = None
        self.next_send = 0.0
        self.open()

    def open(self):
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect("ipc://" + self.path)

    def reset(self):
        if self.sock is not None:
            self.sock.close(0)
        self.inflight = None
        self.open()

    def close(self):
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def send(self, now):
        try:
            self.sock.send(REQ_MEMBERS, zmq.NOBLOCK)
        except zmq.Again:
            return False
        self.inflight = now
        return True

    def pollable(self):
        return self.sock

    def read(self):
        try:
            msg = self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        self.inflight = None
        r = unpack(msg)
        if not r.get("ok"):
            return None
        return {m["name"]: m["status"] for m in r["result"]["members"]}


class SerfConn:
    """Blocking msgpack-over-TCP client for one Serf agent's RPC (handshake done on connect)."""

    def __init__(self, ip, timeout=2.0):
        self.sock = socket.create_connection((ip, SERF_RPC_PORT), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=False)
        self.seq = 0
        self.sock.sendall(msgpack.packb({"Command": "handshake", "Seq": 0}) + msgpack.packb({"Version": 1}))
        hdr = self.next_obj(timeout)
        if hdr.get("Error"):
            raise OSError("serf handshake: " + hdr["Error"])

    def next_obj(self, timeout):
        end = time.monotonic() + timeout
        while True:
            for o in self.unpacker:
                return o
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("serf rpc timeout")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("serf rpc closed")
            self.unpacker.feed(data)

    def send(self, command, body=None):
        self.seq += 1
        b = msgpack.packb({"Command": command, "Seq": self.seq})
        if body is not None:
            b += msgpack.packb(body)
        self.sock.sendall(b)
        return self.seq

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class SerfProbe:
    def __init__(self, ip):
        self.ip = ip
        self.conn = None
        self.inflight = None
        self.next_send = 0.0
        self.want_body = False

    def reset(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.inflight = None

    close = reset

    def send(self, now):
        if self.conn is None:
            try:
                self.conn = SerfConn(self.ip, timeout=1.0)
                self.conn.sock.setblocking(False)
            except (OSError, TimeoutError, ConnectionError, ValueError):
                self.conn = None
                return False
        try:
            self.conn.sock.setblocking(True)
            self.conn.send("members")
            self.conn.sock.setblocking(False)
        except OSError:
            self.reset()
            return False
        self.inflight = now
        self.want_body = False
        return True

    def pollable(self):
        return self.conn.sock.fileno()

    def read(self):
        try:
            data = self.conn.sock.recv(262144)
        except BlockingIOError:
            return None
        except OSError:
            self.reset()
            return None
        if not data:
            self.reset()
            return None
        self.conn.unpacker.feed(data)
        for o in self.conn.unpacker:
            if not self.want_body:
                if o.get("Error"):
                    self.reset()
                    return None
                self.want_body = True
            else:
                self.inflight = None
                self.want_body = False
                return {m["Name"]: m["Status"] for m in o["Members"]}
        return None


def watch(probes, handler, duration, period, req_timeout=5.0):
    """Polls `probes` ({idx: probe}) every `period` s until handler(idx, view, t) returns True
    (-> True) or `duration` s pass (-> False). A request unanswered for req_timeout s is dropped and
    the connection remade."""
    end = time.monotonic() + duration
    while True:
        now = time.monotonic()
        if now >= end:
            return False
        poller = zmq.Poller()
        keys = {}
        wake = end
        for i, p in probes.items():
            if p.inflight is not None and now - p.inflight > req_timeout:
                p.reset()
                p.next_send = now
            if p.inflight is None:
                if now >= p.next_send:
                    p.next_send = now + period
                    p.send(now)
                wake = min(wake, p.next_send)
            if p.inflight is not None:
                k = p.pollable()
                poller.register(k, zmq.POLLIN)
                keys[k] = i
                wake = min(wake, p.inflight + req_timeout + 0.001)
        timeout_ms = max(0, int((wake - time.monotonic()) * 1000.0) + 1)
        for k, _ in poller.poll(timeout_ms):
            i = keys[k]
            view = probes[i].read()
            if view is not None and handler(i, view, time.monotonic()):
                return True


# ---------------------------------------------------------------------------------------------
# the two systems


class System:
    kind = ""

    def __init__(self, bench, n):
        self.b, self.n, self.a = bench, n, bench.args
        self.procs = {}
        self.probes = {}
        self.gen = 0
        self.root = os.path.join(bench.workdir, f"{self.kind}-n{n}")
        os.makedirs(self.root, exist_ok=True)

    # -- overridden
    def argv(self, i, join):
        raise NotImplementedError

    def new_probe(self, i):
        raise NotImplementedError

    # -- common
    def addr(self, i):
        return f"{ip_of(self.kind, i)}:{PORT}"

    def names(self, idxs):
        return {name_of(i) for i in idxs}

    def logpath(self, i):
        return os.path.join(self.root, f"g{self.gen}-{name_of(i)}.log")

    def start(self, i, join):
        p = self.procs.get(i)
        if p is not None and p.poll() is None:
            raise PhaseError(f"{name_of(i)} already runs")
        self.procs[i] = self.b.reg.spawn(self.argv(i, join), self.logpath(i), cwd=self.root)
        if i in self.probes:
            self.probes[i].reset()
        else:
            self.probes[i] = self.new_probe(i)

    def pid(self, i):
        return self.procs[i].pid

    def log_tail(self, i, lines=5):
        try:
            with open(self.logpath(i), "rb") as f:
                return b" | ".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, idxs, timeout=30.0):
        ready = set()
        idxs = list(idxs)

        def h(i, view, t):
            ready.add(i)
            return len(ready) == len(idxs)

        end = time.monotonic() + timeout
        while not watch({i: self.probes[i] for i in idxs if i not in ready}, h, min(0.5, end - time.monotonic()),
                        self.b.period):
            missing = [i for i in idxs if i not in ready]
            dead = [i for i in missing if self.procs[i].poll() is not None]
            if dead or time.monotonic() >= end:
                bad = dead or missing
                why = "; ".join(f"{name_of(i)} rc={self.procs[i].poll()} log: {self.log_tail(i)}" for i in bad[:3])
                raise PhaseError(f"{len(bad)} agents " + ("exited" if dead else f"did not answer RPC in {timeout:.0f} s")
                                 + f": {why}")

    def wait_converged(self, idxs=None, timeout=60.0):
        """Every agent in idxs sees every agent in idxs alive (in its latest members reply)."""
        idxs = sorted(self.procs) if idxs is None else list(idxs)
        want = self.names(idxs)
        ok = {}

        def h(i, view, t):
            ok[i] = all(view.get(nm) == "alive" for nm in want)
            return len(ok) == len(idxs) and all(ok.values())

        t0 = time.monotonic()
        if not watch({i: self.probes[i] for i in idxs}, h, timeout, self.b.period):
            bad = [name_of(i) for i in idxs if not ok.get(i)]
            raise PhaseError(f"no convergence within {timeout:.0f} s ({len(bad)} agents with an incomplete view: {bad[:5]})")
        return time.monotonic() - t0

    def retrying(self, what, fn, attempts=3, pause=10.0):
        """Other programs on this machine may hold one of our addresses for a while (the error
        then names it): retry a cluster start a few times before giving up."""
        for k in range(attempts):
            try:
                return fn()
            except PhaseError as e:
                self.kill_all()
                if k + 1 == attempts:
                    raise
                log(f"[{self.kind} N={self.n}] {what} failed ({e}); {port_holders(self.kind)}; retry in {pause:.0f} s")
                time.sleep(pause)

    def start_cluster(self):
        def go():
            self.kill_all()
            self.gen += 1
            self.start(0, join=False)
            self.wait_ready([0])
            for i in range(1, self.n):
                self.start(i, join=True)
            self.wait_ready(range(self.n))
            return self.wait_converged(timeout=self.a.converge_timeout)
        return self.retrying("cluster start", go)

    def start_unjoined(self):
        def go():
            self.kill_all()
            self.gen += 1
            for i in range(self.n):
                self.start(i, join=False)
            self.wait_ready(range(self.n))
        self.retrying("start without join", go)

    def kill(self, i, sig=signal.SIGKILL):
        p = self.procs[i]
        if p.poll() is None:
            os.kill(p.pid, sig)

    def reap(self, i, timeout=10.0):
        p = self.procs[i]
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None

    def kill_all(self):
        for i, p in self.procs.items():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait()
        for pr in self.probes.values():
            pr.close()
        self.probes = {}
        self.procs = {}
        self.b.reg.reap()


def port_holders(kind):
    """Who (not us) has a UDP socket on our address range: for the error message."""
    r = subprocess.run(["ss", "-lunpH"], capture_output=True, text=True)
    pfx = f"127.{PREFIX[kind]}."
    lines = [" ".join(x.split()[3:]) for x in r.stdout.splitlines() if pfx in x]
    return f"{len(lines)} sockets on {pfx}*: " + ("; ".join(lines[:3]) if lines else "none")


class Weft(System):
    kind = "weft"

    def data_dir(self, i):
        return os.path.join(self.root, f"g{self.gen}", name_of(i))

    def rpc_path(self, i):
        return os.path.join(self.data_dir(i), "rpc.sock")

    def argv(self, i, join):
        os.makedirs(os.path.dirname(self.data_dir(i)), exist_ok=True)
        a = [self.a.weft, "agent", "--node", name_of(i), "--bind", self.addr(i), "--data-dir", self.data_dir(i),
             "--key-file", self.b.keyfile, "--log-level", self.a.log_level]
        return a + (["--join", self.addr(0)] if join else [])

    def new_probe(self, i):
        return WeftProbe(self.b.ctx, self.rpc_path(i))

    def call(self, i, method, params=None, timeout=10.0):
        s = self.b.ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        try:
            s.connect("ipc://" + self.rpc_path(i))
            s.send(msgpack.packb({"v": 1, "method": method, "params": params or {}}))
            return unpack(s.recv())
        finally:
            s.close(0)

    # asynchronous commands (leave, mass join): send now, collect later
    def cmd_open(self, i):
        s = self.b.ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect("ipc://" + self.rpc_path(i))
        return s

    def cmd_send(self, s, method, params):
        s.send(msgpack.packb({"v": 1, "method": method, "params": params}))

    def cmd_collect(self, s, timeout):
        try:
            if s.poll(int(timeout * 1000), zmq.POLLIN):
                r = unpack(s.recv())
                return None if r.get("ok") else str(r.get("error"))
            return "no reply"
        finally:
            s.close(0)

    def join_params(self):
        return "join", {"addrs": [self.addr(0)]}

    COUNTERS = (("gossip", "bytes_sent"), ("gossip", "packets_sent"), ("gossip", "streams_sent"),
                ("gossip", "probes"), ("gossip", "indirect_probes"), ("gossip", "probe_failures"),
                ("gossip", "suspicions_started"), ("gossip", "failed_declared"), ("gossip", "refutes"),
                ("gossip", "syncs_completed"), ("gossip", "syncs_timed_out"), ("udp", "sent"),
                ("reliable", "sent"), ("reliable", "connects"), ("reliable", "idle_closed"))

    def counters(self):
        """Sums over agents of the "info" stats above (gossip.bytes_sent: payload handed to the
        transport, before sealing)."""
        total = {f"{a}.{b}": 0 for a, b in self.COUNTERS}
        for i in self.procs:
            st = self.call(i, "info", timeout=5.0)["result"]["stats"]
            for a, b in self.COUNTERS:
                total[f"{a}.{b}"] += int(st.get(a, {}).get(b, 0))
        return total


class Serf(System):
    kind = "serf"

    def argv(self, i, join):
        ip = ip_of("serf", i)
        a = [self.a.serf, "agent", "-node", name_of(i), "-bind", self.addr(i), "-rpc-addr", f"{ip}:{SERF_RPC_PORT}",
             "-encrypt", self.b.key, "-profile", "lan", "-log-level", self.a.log_level]
        return a + (["-join", self.addr(0)] if join else [])

    def new_probe(self, i):
        return SerfProbe(ip_of("serf", i))

    def cmd_open(self, i):
        return SerfConn(ip_of("serf", i), timeout=5.0)

    def cmd_send(self, c, method, params):
        if method == "leave":
            c.send("leave")
            c.has_body = False
        else:
            c.send("join", {"Existing": params["addrs"], "Replay": False})
            c.has_body = True

    def cmd_collect(self, c, timeout):
        try:
            hdr = c.next_obj(timeout)
            if hdr.get("Error"):
                return hdr["Error"]
            if c.has_body:
                c.next_obj(timeout)
            return None
        except (OSError, TimeoutError, ConnectionError) as e:
            return f"{type(e).__name__}: {e}"
        finally:
            c.close()

    def join_params(self):
        return "join", {"addrs": [self.addr(0)]}

    def counters(self):
        return None


# ---------------------------------------------------------------------------------------------
# nftables counters


class Nft:
    """An inet table counting gossip-port traffic of both address ranges (output hook, so each
    loopback packet is counted once; IP length incl. headers). Client sockets (TCP connects)
    may carry 127.0.0.1 as source, so the rules match the server side: packets TO range:7946 and
    packets FROM range:7946 to another port."""

    def __init__(self, table, loss_chain=False):
        self.table = table
        rules = []
        for sysname, pfx in PREFIX.items():
            net = f"127.{pfx}.0.0/16"
            for proto in ("udp", "tcp"):
                c = f"{sysname}_{proto}"
                rules.append(f"ip daddr {net} {proto} dport {PORT} counter name {c}")
                rules.append(f"ip saddr {net} {proto} sport {PORT} {proto} dport != {PORT} counter name {c}")
        counters = "\n".join(f"  counter {s}_{p} {{ }}" for s in PREFIX for p in ("udp", "tcp"))
        body = "\n    ".join(rules)
        # Loss on the input hook: the sender's sendto() succeeds and the packet vanishes, as on a
        # real network (a drop on output fails sendto() with EPERM, which the sender would see).
        loss = ("  chain loss { type filter hook input priority 0; policy accept; }\n" if loss_chain else "")
        spec = (f"table inet {table} {{\n{counters}\n  chain count {{ type filter hook output priority -10; "
                f"policy accept;\n    {body}\n  }}\n{loss}}}\n")
        subprocess.run(["nft", "-f", "-"], input=spec.encode(), check=True)
        self.live = True

    def read(self):
        out = subprocess.run(["nft", "-j", "list", "table", "inet", self.table], check=True, capture_output=True).stdout
        res = {}
        for o in json.loads(out)["nftables"]:
            if "counter" in o:
                c = o["counter"]
                res[c["name"]] = (c["packets"], c["bytes"])
        return res

    def set_loss(self, pct):
        subprocess.run(["nft", "flush", "chain", "inet", self.table, "loss"], check=True)
        if pct > 0:
            for r in (f"meta l4proto {{ tcp, udp }} th dport {PORT} numgen random mod 100 < {pct} drop",
                      f"meta l4proto {{ tcp, udp }} th sport {PORT} th dport != {PORT} numgen random mod 100 < {pct} drop"):
                subprocess.run(["nft", "add", "rule", "inet", self.table, "loss", r], check=True)

    def delete(self):
        if self.live:
            subprocess.run(["nft", "delete", "table", "inet", self.table], stderr=subprocess.DEVNULL)
            self.live = False


def traffic(sysname, before, after):
    d = {}
    for p in ("udp", "tcp"):
        k = f"{sysname}_{p}"
        d[p + "_packets"] = after[k][0] - before[k][0]
        d[p + "_bytes"] = after[k][1] - before[k][1]
    return d


# ---------------------------------------------------------------------------------------------
# phases


def pick_victim(rng, n):
    return rng.randrange(1, n)


def phase_crash(b, s, res):
    runs = []
    for r in range(b.args.crash_runs):
        if b.over_budget("crash"):
            break
        v = pick_victim(b.rng, s.n)
        vname = name_of(v)
        others = {i: s.probes[i] for i in s.procs if i != v}
        seen, first_suspect = {}, {}
        t0 = time.monotonic()
        s.kill(v)

        def h(i, view, t):
            st = view.get(vname)
            if st == "suspect" and i not in first_suspect:
                first_suspect[i] = t - t0
            if st == "failed" and i not in seen:
                seen[i] = t - t0
            return len(seen) == len(others)

        done = watch(others, h, b.args.crash_timeout, b.period)
        s.reap(v)
        run = {"victim": vname, "detected_by": len(seen), "observers": len(others),
               "all_s": max(seen.values()) if done else None,
               "first_s": min(seen.values()) if seen else None,
               "first_suspect_s": min(first_suspect.values()) if first_suspect else None}
        runs.append(run)
        log(f"[{s.kind} N={s.n}] crash {r + 1}/{b.args.crash_runs}: victim {vname} "
            f"all failed {fmt_s(run['all_s'])} s (first {fmt_s(run['first_s'])} s, {len(seen)}/{len(others)})")
        s.start(v, join=True)
        s.wait_ready([v])
        s.wait_converged(timeout=b.args.converge_timeout)
        time.sleep(b.args.settle)
    res["crash"] = {"runs": runs, "all_s": [r["all_s"] for r in runs]}


def phase_leave(b, s, res):
    nruns = b.args.leave_runs if s.kind == "weft" else b.args.serf_leave_runs
    runs = []
    for r in range(nruns):
        if b.over_budget("leave"):
            break
        v = pick_victim(b.rng, s.n)
        vname = name_of(v)
        others = {i: s.probes[i] for i in s.procs if i != v}
        left, failed_by = {}, set()
        statuses = set()
        c = s.cmd_open(v)
        method, params = "leave", {}
        done_at = [None]
        t0 = time.monotonic()
        s.cmd_send(c, method, params)

        def h(i, view, t):
            st = view.get(vname)
            statuses.add(st)
            if st == "failed":
                failed_by.add(i)
            if st == "left" and i not in left:
                left[i] = t - t0
            if done_at[0] is None and len(left) == len(others):
                done_at[0] = t
            return done_at[0] is not None and t - done_at[0] >= b.args.leave_linger

        watch(others, h, b.args.leave_timeout, b.period)
        err = s.cmd_collect(c, 6.0)
        rc = s.reap(v, timeout=10.0)
        run = {"victim": vname, "all_s": max(left.values()) if len(left) == len(others) else None,
               "first_s": min(left.values()) if left else None, "left_by": len(left), "observers": len(others),
               "failed_by": len(failed_by), "statuses": sorted(str(x) for x in statuses),
               "reply_error": err, "exit_code": rc}
        runs.append(run)
        log(f"[{s.kind} N={s.n}] leave {r + 1}/{nruns}: {vname} all left {fmt_s(run['all_s'])} s "
            f"(first {fmt_s(run['first_s'])} s) failed_by={len(failed_by)} exit={rc}"
            + (f" reply_error={err}" if err else ""))
        s.start(v, join=True)
        s.wait_ready([v])
        s.wait_converged(timeout=b.args.converge_timeout)
        time.sleep(b.args.settle)
    res["leave"] = {"runs": runs, "all_s": [r["all_s"] for r in runs],
                    "runs_with_failed": sum(1 for r in runs if r["failed_by"] > 0)}


def phase_stall(b, s, res):
    runs = []
    for r in range(b.args.stall_runs):
        if b.over_budget("stall"):
            break
        v = pick_victim(b.rng, s.n)
        vname = name_of(v)
        failed, suspect = set(), set()

        def h(i, view, t):
            for nm, st in view.items():
                if st == "failed":
                    failed.add((name_of(i), nm))
                elif st == "suspect":
                    suspect.add((name_of(i), nm))
            return False

        allp = {i: s.probes[i] for i in s.procs}
        s.kill(v, signal.SIGSTOP)
        try:
            watch(allp, h, b.args.stall_seconds, b.period, req_timeout=b.args.stall_seconds + 5)
        finally:
            s.kill(v, signal.SIGCONT)
        watch(allp, h, b.args.stall_watch, b.period, req_timeout=b.args.stall_seconds + 5)
        members_failed = sorted({m for _, m in failed})
        run = {"victim": vname, "members_marked_failed": members_failed, "failed_marks": len(failed),
               "suspect_marks": len(suspect), "observers_suspecting_victim": len({o for o, m in suspect if m == vname}),
               "failed_pairs": sorted(f"{o}->{m}" for o, m in failed)[:20]}
        runs.append(run)
        log(f"[{s.kind} N={s.n}] stall {r + 1}/{b.args.stall_runs}: {vname} stopped {b.args.stall_seconds} s; "
            f"members marked failed: {members_failed or 0}; suspect marks {len(suspect)}")
        s.wait_converged(timeout=b.args.converge_timeout)
        time.sleep(b.args.settle)
    res["stall"] = {"runs": runs, "members_marked_failed": sum(len(r["members_marked_failed"]) for r in runs)}


def mem_summary(s):
    mem = {i: proc_mem_kib(s.pid(i)) for i in s.procs}
    top = sorted(((m["RssAnon"], name_of(i)) for i, m in mem.items()), reverse=True)[:3]
    return {"rss_mib_mean": statistics.mean(m["VmRSS"] for m in mem.values()) / 1024.0,
            "rss_mib_max": max(m["VmRSS"] for m in mem.values()) / 1024.0,
            "rssanon_mib_mean": statistics.mean(m["RssAnon"] for m in mem.values()) / 1024.0,
            "rssanon_mib_median": statistics.median(m["RssAnon"] for m in mem.values()) / 1024.0,
            "rssanon_mib_max": max(m["RssAnon"] for m in mem.values()) / 1024.0,
            "rssfile_mib_mean": statistics.mean(m["RssFile"] for m in mem.values()) / 1024.0,
            "pss_mib_mean": statistics.mean(m.get("Pss", 0) for m in mem.values()) / 1024.0,
            "rssanon_top_kib": [f"{nm}={kib}" for kib, nm in top],
            "per_agent_kib": {name_of(i): [m["VmRSS"], m["RssAnon"], m.get("Pss", 0)] for i, m in sorted(mem.items())}}


def idle_window(b, s, seconds, nft):
    pids = {i: s.pid(i) for i in s.procs}
    k0 = s.counters()
    c0 = nft.read()
    cpu0 = {i: proc_cpu_ticks(p) for i, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1 = {i: proc_cpu_ticks(p) for i, p in pids.items()}
    t1 = time.monotonic()
    c1 = nft.read()
    mem = mem_summary(s)
    k1 = s.counters()
    w = t1 - t0
    n = len(pids)
    tr = traffic(s.kind, c0, c1)
    cpu = [(cpu1[i] - cpu0[i]) / CLK_TCK / w * 100.0 for i in pids]
    out = dict(mem)
    out.update({"window_s": w, "agents": n,
           "cpu_pct_mean": statistics.mean(cpu), "cpu_pct_max": max(cpu),
           "bytes_per_member_s": (tr["udp_bytes"] + tr["tcp_bytes"]) / n / w,
           "udp_bytes_per_member_s": tr["udp_bytes"] / n / w,
           "tcp_bytes_per_member_s": tr["tcp_bytes"] / n / w,
           "packets_per_member_s": (tr["udp_packets"] + tr["tcp_packets"]) / n / w,
           "payload_bytes_per_member_s": (k1["gossip.bytes_sent"] - k0["gossip.bytes_sent"]) / n / w if k0 else None,
           "weft_counters_delta": {k: k1[k] - k0[k] for k in k0} if k0 else None,
           "traffic": tr})
    return out


def phase_idle(b, s, res):
    log(f"[{s.kind} N={s.n}] idle: settle {b.args.idle_settle} s, then {b.args.idle_seconds} s without RPC")
    time.sleep(b.args.idle_settle)
    out = idle_window(b, s, b.args.idle_seconds, b.nft)
    s.wait_converged(timeout=b.args.converge_timeout)
    res["idle"] = out
    log(f"[{s.kind} N={s.n}] idle: RSS {out['rss_mib_mean']:.2f} MiB (max {out['rss_mib_max']:.2f}), RssAnon "
        f"{out['rssanon_mib_mean']:.2f} MiB (largest {', '.join(out['rssanon_top_kib'])} KiB), CPU {out['cpu_pct_mean']:.3f} % (max {out['cpu_pct_max']:.3f}), "
        f"{out['bytes_per_member_s']:.0f} B/s/member on the wire ({out['packets_per_member_s']:.2f} pkt/s)"
        + (f", payload {out['payload_bytes_per_member_s']:.0f} B/s" if out["payload_bytes_per_member_s"] is not None else ""))


def phase_join(b, s, res):
    nruns = b.args.join_runs if s.kind == "weft" else b.args.serf_join_runs
    runs = []
    for r in range(nruns):
        if b.over_budget("join"):
            break
        s.start_unjoined()
        want = s.names(range(s.n))
        clients = {i: s.cmd_open(i) for i in range(1, s.n)}
        method, params = s.join_params()
        ok = {}
        allp = {i: s.probes[i] for i in s.procs}

        def h(i, view, t):
            ok[i] = all(view.get(nm) == "alive" for nm in want)
            return len(ok) == s.n and all(ok.values())

        t0 = time.monotonic()
        for c in clients.values():
            s.cmd_send(c, method, params)
        t_sent = time.monotonic() - t0
        done = watch(allp, h, b.args.join_timeout, b.period)
        t = time.monotonic() - t0 if done else None
        errors = [e for e in (s.cmd_collect(c, 6.0) for c in clients.values()) if e]
        runs.append({"all_alive_s": t, "send_s": t_sent, "join_errors": len(errors), "errors": errors[:3]})
        log(f"[{s.kind} N={s.n}] join {r + 1}/{nruns}: all {s.n} see {s.n} alive after {fmt_s(t)} s "
            f"(joins sent in {t_sent * 1000:.1f} ms; {len(errors)} join errors)")
        s.kill_all()
    res["join"] = {"runs": runs, "all_s": [r["all_alive_s"] for r in runs]}


# ---------------------------------------------------------------------------------------------
# loss phase: runs inside a network namespace (this script re-executed with --inner-loss)


def inner_loss(b):
    a = b.args
    nft = Nft(b.tag, loss_chain=True)
    b.nft = nft
    out = {}
    try:
        for kind in a.systems:
            s = (Weft if kind == "weft" else Serf)(b, a.loss_n)
            b.systems.append(s)
            res = {}
            out[kind] = res
            try:
                conv = s.start_cluster()
                log(f"[{kind} N={a.loss_n} netns] converged in {conv:.2f} s; settle {a.loss_settle} s, "
                    f"baseline {a.loss_baseline} s without loss")
                time.sleep(a.loss_settle)
                base = idle_window(b, s, a.loss_baseline, nft)
                res["baseline"] = base
                failed, suspect = {}, set()
                k0 = s.counters()
                c0 = nft.read()
                nft.set_loss(a.loss_pct)
                t0 = time.monotonic()
                log(f"[{kind} N={a.loss_n} netns] {a.loss_pct} % loss on the gossip port for {a.loss_minutes} min")

                def h(i, view, t):
                    for nm, st in view.items():
                        if st == "failed" and (name_of(i), nm) not in failed:
                            failed[(name_of(i), nm)] = t - t0
                            log(f"[{kind} netns] false failure: {name_of(i)} marks {nm} failed at {t - t0:.1f} s")
                        elif st == "suspect":
                            suspect.add((name_of(i), nm))
                    return False

                watch({i: s.probes[i] for i in s.procs}, h, a.loss_minutes * 60.0, a.loss_poll_ms / 1000.0)
                w = time.monotonic() - t0
                c1 = nft.read()
                nft.set_loss(0)
                k1 = s.counters()
                tr = traffic(kind, c0, c1)
                bps = (tr["udp_bytes"] + tr["tcp_bytes"]) / s.n / w
                res["loss"] = {"window_s": w, "loss_pct": a.loss_pct, "false_failed_marks": len(failed),
                               "members_marked_failed": sorted({m for _, m in failed}),
                               "failed_pairs": [f"{o}->{m}@{t:.1f}s" for (o, m), t in sorted(failed.items())][:30],
                               "suspect_pairs": len(suspect), "bytes_per_member_s": bps,
                               "payload_bytes_per_member_s": (k1["gossip.bytes_sent"] - k0["gossip.bytes_sent"]) / s.n / w if k0 else None,
                               "weft_counters_delta": {k: k1[k] - k0[k] for k in k0} if k0 else None,
                               "growth": bps / base["bytes_per_member_s"] if base["bytes_per_member_s"] else None,
                               "traffic": tr}
                log(f"[{kind} N={a.loss_n} netns] loss: {len(failed)} false failed marks "
                    f"({len({m for _, m in failed})} members), {bps:.0f} B/s/member vs {base['bytes_per_member_s']:.0f} "
                    f"without loss (x{res['loss']['growth']:.2f})")
            except PhaseError as e:
                log(f"[{kind} netns] ERROR: {e}")
                res["error"] = str(e)
            finally:
                s.kill_all()
    finally:
        nft.delete()
    with open(a.inner_out, "w") as f:
        json.dump(out, f)


def phase_loss_outer(b):
    a = b.args
    ns = b.tag
    results = {}
    if subprocess.run(["ip", "netns", "add", ns]).returncode != 0:
        return {"error": "ip netns add failed"}
    b.netns = ns
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        outp = os.path.join(b.workdir, "loss.json")
        wd = os.path.join(b.workdir, "loss")
        os.makedirs(wd, exist_ok=True)
        argv = ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--inner-loss",
                "--inner-out", outp, "--workdir", wd, "--tag", b.tag, "--pidfile", b.reg.pidfile,
                "--weft", a.weft, "--serf", a.serf, "--systems", ",".join(a.systems),
                "--loss-n", str(a.loss_n), "--loss-pct", str(a.loss_pct), "--loss-minutes", str(a.loss_minutes),
                "--loss-settle", str(a.loss_settle), "--loss-baseline", str(a.loss_baseline),
                "--loss-poll-ms", str(a.loss_poll_ms), "--log-level", a.log_level,
                "--converge-timeout", str(a.converge_timeout), "--seed", str(a.seed)]
        p = subprocess.Popen(argv)
        b.inner = p
        limit = len(a.systems) * (a.loss_minutes * 60 + a.loss_settle + a.loss_baseline + 300)
        try:
            p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            log("loss: inner run over its time limit; stopping it")
            p.terminate()
            p.wait(timeout=30)
        b.inner = None
        if os.path.exists(outp):
            with open(outp) as f:
                results = json.load(f)
        else:
            results = {"error": f"inner run exited {p.returncode} without results"}
    finally:
        cleanup_netns(ns)
        b.netns = None
    return results


def cleanup_netns(ns):
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# report


def fmt_s(v):
    return "-" if v is None else f"{v:.2f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def mx(xs):
    if not xs:
        return None
    t = sum(1 for x in xs if x is None)
    return f"timeout in {t}" if t else max(xs)


def ok_le(v, limit):
    return isinstance(v, (int, float)) and v <= limit


def rows_for(n, R):
    """(metric, weft, serf, ratio, target, pass) rows; numbers are floats or strings."""
    w, s = R.get("weft", {}), R.get("serf", {})
    rows = []

    def row(metric, wv, sv, target, ok, unit_fmt="{:.2f}"):
        def f(v):
            if v is None:
                return "-"
            return unit_fmt.format(v) if isinstance(v, (int, float)) else str(v)
        ratio = (f"{wv / sv:.2f}" if isinstance(wv, (int, float)) and isinstance(sv, (int, float)) and sv else "-")
        rows.append((metric, f(wv), f(sv), ratio, target, "-" if ok is None else ("pass" if ok else "FAIL")))

    if "crash" in w or "crash" in s:
        wc, sc = w.get("crash", {}).get("all_s", []), s.get("crash", {}).get("all_s", [])
        row(f"crash: all see failed, median s ({len(wc)}/{len(sc)} runs)", med(wc), med(sc), "", None)
        row("crash: all see failed, max s", mx(wc), mx(sc), "<= 5 s", None if not wc else ok_le(mx(wc), 5.0))
    if "leave" in w or "leave" in s:
        wl, sl = w.get("leave", {}), s.get("leave", {})
        row(f"leave: all see left, median s ({len(wl.get('all_s', []))}/{len(sl.get('all_s', []))} runs)",
            med(wl.get("all_s", [])), med(sl.get("all_s", [])), "", None)
        wm = mx(wl.get("all_s", []))
        row("leave: all see left, max s", wm, mx(sl.get("all_s", [])), "<= 0.5 s",
            None if not wl else ok_le(wm, 0.5))
        row("leave: runs where someone saw it failed", wl.get("runs_with_failed"), sl.get("runs_with_failed"), "0",
            None if not wl else wl.get("runs_with_failed") == 0, "{:d}")
    if "join" in w or "join" in s:
        wj, sj = w.get("join", {}).get("all_s", []), s.get("join", {}).get("all_s", [])
        row(f"mass join: all see N alive, median s ({len(wj)}/{len(sj)} runs)", med(wj), med(sj), "", None)
        row("mass join: max s", mx(wj), mx(sj), "<= 1 s", None if not wj else ok_le(mx(wj), 1.0))
        wk = sum(1 for x in wj if x is not None and x <= 1.0)
        sk = sum(1 for x in sj if x is not None and x <= 1.0)
        row("mass join: runs <= 1 s", f"{wk}/{len(wj)}", f"{sk}/{len(sj)}", "all", None if not wj else wk == len(wj))
        wt = sum(1 for x in wj if x is None)
        st = sum(1 for x in sj if x is None)
        if wt or st:
            row("mass join: runs not converged (--join-timeout)", wt, st, "0", wt == 0, "{:d}")
    if "mem_start" in w or "mem_start" in s:
        wm0, sm0 = w.get("mem_start", {}), s.get("mem_start", {})
        row("after convergence: RSS MiB (mean)", wm0.get("rss_mib_mean"), sm0.get("rss_mib_mean"), "<= 7.5",
            None if not wm0 else wm0["rss_mib_mean"] <= 7.5)
        row("after convergence: RssAnon MiB (mean)", wm0.get("rssanon_mib_mean"), sm0.get("rssanon_mib_mean"), "<= 2",
            None if not wm0 else wm0["rssanon_mib_mean"] <= 2.0)
        row("after convergence: RssAnon MiB (max agent)", wm0.get("rssanon_mib_max"), sm0.get("rssanon_mib_max"), "", None)
    if "idle" in w or "idle" in s:
        wi, si = w.get("idle", {}), s.get("idle", {})
        g = lambda d, k: d.get(k)
        row("idle: RSS MiB (mean)", g(wi, "rss_mib_mean"), g(si, "rss_mib_mean"), "<= 7.5",
            None if not wi else wi["rss_mib_mean"] <= 7.5)
        row("idle: RssAnon MiB (mean)", g(wi, "rssanon_mib_mean"), g(si, "rssanon_mib_mean"), "<= 2",
            None if not wi else wi["rssanon_mib_mean"] <= 2.0)
        row("idle: RssAnon MiB (max agent)", g(wi, "rssanon_mib_max"), g(si, "rssanon_mib_max"), "", None)
        row("idle: CPU % of a core (mean)", g(wi, "cpu_pct_mean"), g(si, "cpu_pct_mean"), "<= 0.05",
            None if not wi else wi["cpu_pct_mean"] <= 0.05, "{:.3f}")
        row("idle: B/s per member (nft, IP bytes)", g(wi, "bytes_per_member_s"), g(si, "bytes_per_member_s"),
            "<= 200", None if not wi else wi["bytes_per_member_s"] <= 200, "{:.0f}")
        row("idle: Pss MiB (mean; shared pages split)", g(wi, "pss_mib_mean"), g(si, "pss_mib_mean"), "", None)
        row("idle: packets/s per member (nft)", g(wi, "packets_per_member_s"), g(si, "packets_per_member_s"), "", None)
        row("idle: UDP B/s per member (nft)", g(wi, "udp_bytes_per_member_s"), g(si, "udp_bytes_per_member_s"), "", None, "{:.0f}")
        row("idle: TCP B/s per member (nft)", g(wi, "tcp_bytes_per_member_s"), g(si, "tcp_bytes_per_member_s"), "", None, "{:.0f}")
    if "stall" in w or "stall" in s:
        ws, ss = w.get("stall", {}), s.get("stall", {})
        row(f"stall {len(ws.get('runs', []))}x: members marked failed", ws.get("members_marked_failed"),
            ss.get("members_marked_failed"), "0", None if not ws else ws.get("members_marked_failed") == 0, "{:d}")
    return rows


def print_table(title, rows):
    hdr = ("metric", "weft", "serf", "weft/serf", "target", "weft")
    widths = [max(len(str(r[k])) for r in rows + [hdr]) for k in range(6)]
    print(f"\n{title}")
    line = "  ".join(str(h).ljust(widths[k]) for k, h in enumerate(hdr))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(v).ljust(widths[k]) if k == 0 else str(v).rjust(widths[k]) for k, v in enumerate(r)))


def loss_rows(L, minutes, pct, n):
    w, s = L.get("weft", {}).get("loss", {}), L.get("serf", {}).get("loss", {})
    wb, sb = L.get("weft", {}).get("baseline", {}), L.get("serf", {}).get("baseline", {})

    def f(v, fm):
        return "-" if v is None else fm.format(v)

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "-"

    rows = [(f"false 'failed' marks in {minutes:g} min", f(w.get("false_failed_marks"), "{:d}"),
             f(s.get("false_failed_marks"), "{:d}"), "-", "0",
             "-" if not w else ("pass" if w.get("false_failed_marks") == 0 else "FAIL")),
            ("B/s per member without loss", f(wb.get("bytes_per_member_s"), "{:.0f}"),
             f(sb.get("bytes_per_member_s"), "{:.0f}"), ratio(wb.get("bytes_per_member_s"), sb.get("bytes_per_member_s")), "", "-"),
            (f"B/s per member at {pct} % loss", f(w.get("bytes_per_member_s"), "{:.0f}"),
             f(s.get("bytes_per_member_s"), "{:.0f}"), ratio(w.get("bytes_per_member_s"), s.get("bytes_per_member_s")), "", "-"),
            ("traffic growth under loss", f(w.get("growth"), "{:.2f}"), f(s.get("growth"), "{:.2f}"),
             ratio(w.get("growth"), s.get("growth")), "<= 1.5x",
             "-" if not w or w.get("growth") is None else ("pass" if w["growth"] <= 1.5 else "FAIL"))]
    return rows


# ---------------------------------------------------------------------------------------------
# main


class Bench:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.period = args.poll_ms / 1000.0
        self.own_workdir = args.workdir is None
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="meshbench.")
        os.makedirs(self.workdir, exist_ok=True)
        self.tag = args.tag or f"meshbench_{os.getpid()}"
        self.reg = Registry(args.pidfile or os.path.join(self.workdir, "pids"))
        self.ctx = zmq.Context()
        self.systems = []
        self.nft = None
        self.netns = None
        self.inner = None
        self.phase_t0 = {}
        self.keyfile = os.path.join(self.workdir, "cluster.key")
        self.key = None

    def over_budget(self, phase):
        t0 = self.phase_t0.setdefault(phase, time.monotonic())
        if time.monotonic() - t0 > self.args.phase_budget:
            log(f"{phase}: over the phase budget of {self.args.phase_budget:.0f} s; no more runs")
            return True
        return False

    def make_key(self):
        if self.args.weft and "weft" in self.args.systems:
            key = subprocess.run([self.args.weft, "keygen"], check=True, capture_output=True, text=True).stdout.strip()
        else:
            key = __import__("base64").b64encode(os.urandom(32)).decode()
        with open(self.keyfile, "w") as f:
            f.write(key + "\n")
        os.chmod(self.keyfile, 0o600)
        self.key = key

    def cleanup(self):
        for sg in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sg, signal.SIG_IGN)
        if self.inner is not None and self.inner.poll() is None:
            self.inner.terminate()
            try:
                self.inner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.inner.kill()
        for s in self.systems:
            try:
                s.kill_all()
            except Exception:
                pass
        self.reg.kill_all()
        if self.nft is not None:
            self.nft.delete()
        if self.netns:
            cleanup_netns(self.netns)
        self.ctx.destroy(linger=0)
        if self.args.keep_logs:
            dst = self.args.keep_logs
            os.makedirs(dst, exist_ok=True)
            for root, _, files in os.walk(self.workdir):
                for fn in files:
                    if fn.endswith(".log"):
                        shutil.copy(os.path.join(root, fn),
                                    os.path.join(dst, os.path.relpath(os.path.join(root, fn), self.workdir).replace("/", "_")))
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description="weft agents against Serf agents on loopback (see the module doc).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weft", help="weft binary", default=None)
    p.add_argument("--serf", help="serf binary", default=shutil.which("serf") or "serf")
    p.add_argument("--n", default="32,64", help="cluster sizes, comma-separated")
    p.add_argument("--systems", default="weft,serf", help="weft,serf or just one")
    p.add_argument("--phases", default="crash,leave,join,idle,stall",
                   help="any of crash,leave,join,idle,stall,loss (loss: 10+ min per system)")
    p.add_argument("--crash-runs", type=int, default=5)
    p.add_argument("--leave-runs", type=int, default=50, help="leave runs for weft")
    p.add_argument("--serf-leave-runs", type=int, default=10)
    p.add_argument("--join-runs", type=int, default=20, help="mass-join runs for weft")
    p.add_argument("--serf-join-runs", type=int, default=5)
    p.add_argument("--stall-runs", type=int, default=3)
    p.add_argument("--stall-seconds", type=float, default=2.5)
    p.add_argument("--stall-watch", type=float, default=15.0, help="seconds watched after SIGCONT")
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--idle-settle", type=float, default=135.0,
                   help="quiet s before the idle window (weft's last join catch-up sync of an agent restarted "
                        "by the earlier phases is 128 s after its join)")
    p.add_argument("--poll-ms", type=float, default=20.0, help="members poll period per agent")
    p.add_argument("--settle", type=float, default=1.0, help="pause after convergence between runs")
    p.add_argument("--crash-timeout", type=float, default=60.0)
    p.add_argument("--leave-timeout", type=float, default=20.0)
    p.add_argument("--leave-linger", type=float, default=0.5, help="keep watching after all saw 'left'")
    p.add_argument("--join-timeout", type=float, default=60.0)
    p.add_argument("--converge-timeout", type=float, default=90.0)
    p.add_argument("--phase-budget", type=float, default=1200.0, help="no new runs of a phase after this many s")
    p.add_argument("--loss-n", type=int, default=32)
    p.add_argument("--loss-pct", type=int, default=10)
    p.add_argument("--loss-minutes", type=float, default=10.0)
    p.add_argument("--loss-settle", type=float, default=135.0,
                   help="s after convergence before the loss-free baseline (weft's join catch-up syncs end at 128 s)")
    p.add_argument("--loss-baseline", type=float, default=60.0)
    p.add_argument("--loss-poll-ms", type=float, default=100.0)
    p.add_argument("--log-level", default="warn")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--keep-logs", help="copy agent logs here at exit")
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--tag", help=argparse.SUPPRESS)
    p.add_argument("--pidfile", help=argparse.SUPPRESS)
    p.add_argument("--inner-loss", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--inner-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.ns = [int(x) for x in a.n.split(",") if x]
    a.systems = [x for x in a.systems.split(",") if x]
    a.phases = [x for x in a.phases.split(",") if x]
    for x in a.phases:
        if x not in ("crash", "leave", "join", "idle", "stall", "loss"):
            p.error(f"unknown phase {x}")
    for x in a.systems:
        if x not in ("weft", "serf"):
            p.error(f"unknown system {x}")
    if "weft" in a.systems and not (a.weft and os.access(a.weft, os.X_OK)):
        p.error("--weft PATH to the weft binary is needed")
    if "serf" in a.systems and not shutil.which(a.serf):
        p.error("serf not found (apt-get install -y serf)")
    if max(a.ns + [a.loss_n]) > 250 * 250:
        p.error("N too large")
    return a


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0 and ("idle" in args.phases or "loss" in args.phases or args.inner_loss):
        sys.exit("mesh_bench: nftables counters and netns need root")
    b = Bench(args)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)

    for sg in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sg, on_signal)
    try:
        b.make_key()
        if args.inner_loss:
            inner_loss(b)
            return 0
        return run(b)
    finally:
        b.cleanup()


def run(b):
    a = b.args
    results = {"config": {k: v for k, v in vars(a).items() if k not in ("workdir", "tag", "pidfile", "inner_out")},
               "host": {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg()}, "by_n": {}}
    main_phases = [p for p in a.phases if p != "loss"]
    if any(p in main_phases for p in ("idle",)):
        b.nft = Nft(b.tag)
    t_start = time.monotonic()
    for n in a.ns if main_phases else []:
        R = results["by_n"].setdefault(str(n), {})
        for kind in a.systems:
            s = (Weft if kind == "weft" else Serf)(b, n)
            b.systems.append(s)
            res = R.setdefault(kind, {})
            b.phase_t0 = {}
            try:
                cluster_phases = [p for p in ("crash", "leave", "stall", "idle") if p in main_phases]
                try:
                    conv = s.start_cluster() if cluster_phases else None
                except PhaseError as e:
                    log(f"[{kind} N={n}] cluster start: ERROR {e}; skipping {','.join(cluster_phases)}")
                    res.setdefault("errors", []).append(f"cluster start: {e}")
                    cluster_phases = []
                if cluster_phases:
                    res["startup_converge_s"] = conv
                    res["mem_start"] = mem_summary(s)
                    m = res["mem_start"]
                    log(f"[{kind} N={n}] {n} agents started (seed + N-1 with --join) and converged in {conv:.2f} s; "
                        f"RSS {m['rss_mib_mean']:.2f} MiB, RssAnon {m['rssanon_mib_mean']:.2f} MiB "
                        f"(largest {', '.join(m['rssanon_top_kib'])} KiB)")
                for ph in cluster_phases:
                    try:
                        {"crash": phase_crash, "leave": phase_leave, "stall": phase_stall, "idle": phase_idle}[ph](b, s, res)
                    except PhaseError as e:
                        log(f"[{kind} N={n}] {ph}: ERROR {e}; restarting the cluster")
                        res.setdefault("errors", []).append(f"{ph}: {e}")
                        s.start_cluster()
                s.kill_all()
                if "join" in main_phases:
                    try:
                        phase_join(b, s, res)
                    except PhaseError as e:
                        log(f"[{kind} N={n}] join: ERROR {e}")
                        res.setdefault("errors", []).append(f"join: {e}")
            except PhaseError as e:
                log(f"[{kind} N={n}] ERROR {e}")
                res.setdefault("errors", []).append(str(e))
            finally:
                s.kill_all()
                b.systems.remove(s)
    if "loss" in a.phases:
        log(f"loss: N={a.loss_n}, {a.loss_pct} % loss for {a.loss_minutes} min per system, in netns {b.tag}")
        results["loss"] = phase_loss_outer(b)
    results["host"]["loadavg_end"] = os.getloadavg()
    results["wall_s"] = time.monotonic() - t_start

    print("\n==== summary (weft vs Serf " + serf_version(a.serf) + ", loopback, one cluster at a time) ====")
    for n in a.ns:
        R = results["by_n"].get(str(n))
        if R:
            print_table(f"N = {n}", rows_for(n, R))
            for kind in a.systems:
                for e in R.get(kind, {}).get("errors", []):
                    print(f"  {kind} error: {e}")
    if "loss" in results:
        L = results["loss"]
        if "error" in L:
            print(f"\nloss: {L['error']}")
        else:
            print_table(f"loss: N = {a.loss_n}, {a.loss_pct} % of gossip packets dropped, {a.loss_minutes:g} min",
                        loss_rows(L, a.loss_minutes, a.loss_pct, a.loss_n))
            for kind in a.systems:
                if L.get(kind, {}).get("error"):
                    print(f"  {kind} error: {L[kind]['error']}")
    print(f"\nwall {results['wall_s']:.0f} s; load average at start {results['host']['loadavg_start'][0]:.2f}, "
          f"at end {results['host']['loadavg_end'][0]:.2f} ({os.cpu_count()} cores)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"results: {a.json}")
    return 0


def serf_version(serf):
    try:
        out = subprocess.run([serf, "version"], capture_output=True, text=True, timeout=5).stdout
        return out.split("\n")[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        return "serf"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
