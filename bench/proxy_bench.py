#!/usr/bin/python3
"""bench/proxy_bench.py - weft's data plane against HAProxy, side by side, on loopback (issue 4).

Driven by bench/haproxy_bench.sh (which installs the packages, finds the weft binary and cleans up
behind a crashed driver); it also runs on its own (as root or not):

  bench/proxy_bench.py --weft build/release/cli/weft [--quick] [--paths direct,haproxy1,...]

Every path is a chain of real processes on 127.0.x.y, all started once and left running; the
backends (nginx with one worker and access_log off, one iperf3 server per path, a SHA-256 sink)
listen on 127.0.0.1:

  direct       client -> backend
  haproxy1     client -> haproxy (127.0.81.1, mode tcp) -> backend
  haproxy2     client -> haproxy A (127.0.82.1) -> haproxy B (127.0.82.2) -> backend, plaintext
  haproxy2tls  as haproxy2 (127.0.83.x), TLS 1.3 (TLS_AES_256_GCM_SHA384) A -> B, mutual
               (B: bind ... ssl crt b.pem ca-file ca.pem verify required; A: server ... ssl crt
               a.pem ca-file ca.pem verify required), certs made with openssl in the work dir
  weft         client -> weft agent a's upstream (127.0.80.1:9000+) -> Noise/AES-GCM/mux ->
               agent b (127.0.80.2) -> backend; services registered on b with `--check tcp`,
               upstreams added on a; measured only once `weft routes` says "passing"

Each HAProxy process runs with `nbthread 1` (one core each, like weft's one data-plane thread).

Every wrk run opens its connections anew, so their setup is in the figures: through HAProxy-TLS,
256 connections at once mean 256 TLS handshakes A -> B (resumed with tickets, but still ~1.5 ms
of CPU each here), which is most of that path's p99 at 256 connections. weft's agents keep one
session per peer, so a new app connection is a new stream, not a handshake.

Measurements, per path (rounds interleaved: round r runs each metric on every path in turn, so
the paths of one metric are measured minutes apart at most; medians over rounds are reported):

  bulk     iperf3 -c, one stream, --duration s: Gbit/s (receiver), CPU s per GB per proxy process
           (utime+stime from /proc/PID/stat, all threads)
  lat1     wrk -t1 -c1 --latency on a 1 KiB file: p50, p99; added p50 = path p50 - direct p50
           (same round)
  c32      wrk -t2 -c32: requests/s, p99, proxy CPU per request
  c256     wrk -t2 -c256: requests/s, p99, proxy CPU per request, proxy RSS sampled during the run
  conn     wrk -t2 -c32 -H "Connection: close": new connections/s, proxy CPU per connection

Once, before the rounds, on the fresh processes: RSS of each proxy process idle; --idle-conns
keep-alive connections opened through each path to nginx (each sends one request, reads the reply,
then idles): the RSS growth of the path's proxy processes divided by the count is the memory per
idle proxied connection (user space only: kernel socket buffers are not in RSS); then byte-exact
checks on every path (a --check-mib MiB random file downloaded from nginx, SHA-256 compared; the
same amount of random data uploaded in random-sized writes to a sink that replies with the SHA-256
of what it read until EOF, so half-close has to work). wrk socket errors and non-2xx responses are
summed over every run of a path. At the end, each haproxy's `show info` TLS counters (whether A
resumed its TLS sessions to B) go to the JSON and the TLS path's to the summary.

Everything started here is killed at exit (also on SIGINT/SIGTERM/SIGHUP; process groups, so
nginx and haproxy children too) and the work dir (certs included) removed unless it was given.
PIDs go to --pidfile ("pid starttime" lines) for the shell wrapper's backstop.
"""

import argparse
import hashlib
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024.0 * 1024.0
GB = 1e9

ALL_PATHS = ["direct", "haproxy1", "haproxy2", "haproxy2tls", "weft"]
LABEL = {"direct": "direct", "haproxy1": "HAProxy 1 hop", "haproxy2": "HAProxy 2 plain",
         "haproxy2tls": "HAProxy 2 TLS", "weft": "weft"}
# service index -> (name, offset from a path's base port)
SERVICES = [("web", 0), ("iperf", 1), ("sink", 2)]
BACKEND_HTTP = 18180          # nginx, 127.0.0.1
BACKEND_SINK = 18182          # sha-256 sink, 127.0.0.1
BACKEND_IPERF = {"direct": 18201, "haproxy1": 18202, "haproxy2": 18203, "haproxy2tls": 18204, "weft": 18205}
FRONT_BASE = 9000             # a path's listeners: 9000 http, 9001 iperf, 9002 sink
HOP_BASE = 9100               # haproxy B's listeners in the two-hop paths
WEFT_A, WEFT_B = "127.0.80.1", "127.0.80.2"
WEFT_PORT = 7946


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# processes


def proc_starttime(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


class Registry:
    """Every process we start, each in its own session; killed (its whole group) at cleanup."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.procs = []
        self.logs = {}

    def spawn(self, argv, logpath, stdout=None, **kw):
        out = open(logpath, "ab")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout if stdout is not None else out,
                                 stderr=out, start_new_session=True, **kw)
        finally:
            out.close()
        self.procs.append(p)
        self.logs[p.pid] = logpath
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {proc_starttime(p.pid)}\n")
        return p

    def stop(self, p, grace=3.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the group: children of a dead leader too
        except OSError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if p in self.procs:
            self.procs.remove(p)

    def kill_all(self):
        for p in list(self.procs):
            self.stop(p, grace=2.0)


def run_client(reg, argv, logpath, timeout):
    """Runs a client (wrk, iperf3) to completion with a bounded wait; returns (rc, stdout text)."""
    outpath = logpath + ".out"
    with open(outpath, "wb") as out:
        p = reg.spawn(argv, logpath, stdout=out)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        reg.stop(p, grace=1.0)
    with open(outpath, "rb") as f:
        text = f.read().decode(errors="replace")
    with open(logpath, "ab") as f:
        f.write(f"$ {' '.join(argv)}\n".encode() + text.encode() + b"\n")
    os.unlink(outpath)
    return rc, text


def wait_port(ip, port, timeout, proc=None, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited (rc={proc.returncode}) before listening on {ip}:{port}")
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what}: nothing listens on {ip}:{port} after {timeout:.0f} s")


def port_busy(ip, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((ip, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def tail(path, n=8):
    try:
        with open(path, "rb") as f:
            return " | ".join(x.decode(errors="replace") for x in f.read().splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# backends

SINK_PY = r"""
import hashlib, socket, sys, threading
def serve(c):
    h = hashlib.sha256()
    try:
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            h.update(b)
        c.sendall((h.hexdigest() + "\n").encode())
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(128)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

NGINX_CONF = """worker_processes 1;
daemon off;
user root;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {w}/nginx-tmp/body;
  proxy_temp_path {w}/nginx-tmp/proxy;
  fastcgi_temp_path {w}/nginx-tmp/fcgi;
  uwsgi_temp_path {w}/nginx-tmp/uwsgi;
  scgi_temp_path {w}/nginx-tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 900s;
  sendfile on;
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {w}/www; }}
}}
"""

HAPROXY_GLOBAL = """global
  nbthread 1
  maxconn 5000
  log stderr format short local0 warning
  ssl-default-bind-ciphersuites TLS_AES_256_GCM_SHA384
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-ciphersuites TLS_AES_256_GCM_SHA384
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode tcp
  log global
  maxconn 5000
  timeout connect 5s
  timeout client 1h
  timeout server 1h
"""


class Bench:
    def __init__(self, args):
        self.a = args
        self.own_workdir = args.workdir is None
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="proxybench.")
        os.makedirs(self.workdir, exist_ok=True)
        self.logdir = os.path.join(self.workdir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.reg = Registry(args.pidfile or os.path.join(self.workdir, "pids"))
        self.proxies = {p: [] for p in ALL_PATHS}     # path -> [(name, Popen)]
        self.front = {}                                # path -> ip of the client-facing listeners
        self.weft = None
        self.weft_version = ""
        self.errors = {p: [] for p in ALL_PATHS}
        self.big_sha = None
        self.hasock = {}

    def lp(self, name):
        return os.path.join(self.logdir, name + ".log")

    # -- setup --------------------------------------------------------------------------------

    def check_ports(self):
        want = [("127.0.0.1", BACKEND_HTTP), ("127.0.0.1", BACKEND_SINK)]
        want += [("127.0.0.1", BACKEND_IPERF[p]) for p in self.a.paths]
        ips = {"haproxy1": ["127.0.81.1"], "haproxy2": ["127.0.82.1", "127.0.82.2"],
               "haproxy2tls": ["127.0.83.1", "127.0.83.2"], "weft": [WEFT_A]}
        for p in self.a.paths:
            for ip in ips.get(p, []):
                want += [(ip, FRONT_BASE + o) for _, o in SERVICES] + [(ip, HOP_BASE + o) for _, o in SERVICES]
        if "weft" in self.a.paths:
            want += [(WEFT_A, WEFT_PORT), (WEFT_A, WEFT_PORT + 1), (WEFT_B, WEFT_PORT), (WEFT_B, WEFT_PORT + 1)]
        busy = [f"{ip}:{port}" for ip, port in want if port_busy(ip, port)]
        if busy:
            raise BenchError("addresses in use by another program: " + ", ".join(busy[:8]))

    def start_backends(self):
        w = self.workdir
        os.makedirs(os.path.join(w, "www"), exist_ok=True)
        os.makedirs(os.path.join(w, "nginx-tmp"), exist_ok=True)
        with open(os.path.join(w, "www", "1k"), "wb") as f:
            f.write(os.urandom(1024))
        h = hashlib.sha256()
        with open(os.path.join(w, "www", "big"), "wb") as f:
            for _ in range(self.a.check_mib):
                b = os.urandom(1 << 20)
                h.update(b)
                f.write(b)
        self.big_sha = h.hexdigest()
        conf = os.path.join(w, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(w=w, port=BACKEND_HTTP))
        p = self.reg.spawn(["nginx", "-p", w, "-c", conf, "-e", os.path.join(w, "nginx-error.log")], self.lp("nginx"))
        wait_port("127.0.0.1", BACKEND_HTTP, 10, p, "nginx")
        sink = os.path.join(w, "sink.py")
        with open(sink, "w") as f:
            f.write(SINK_PY)
        p = self.reg.spawn([sys.executable, sink, str(BACKEND_SINK)], self.lp("sink"))
        wait_port("127.0.0.1", BACKEND_SINK, 10, p, "sink")
        for path in self.a.paths:
            port = BACKEND_IPERF[path]
            p = self.reg.spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)], self.lp(f"iperf3-server-{path}"))
            wait_port("127.0.0.1", port, 10, p, f"iperf3 -s for {path}")
        # an iperf3 server takes the control connection of wait_port as a test start: let it reset
        time.sleep(0.5)

    def backend_port(self, path, svc):
        return {"web": BACKEND_HTTP, "iperf": BACKEND_IPERF[path], "sink": BACKEND_SINK}[svc]

    def make_certs(self):
        d = os.path.join(self.workdir, "tls")
        os.makedirs(d, exist_ok=True)

        def ossl(*args):
            r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise BenchError(f"openssl {' '.join(args[:2])}: {r.stderr.strip()[-300:]}")

        ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=proxybench-ca")
        for name, ip in (("a", "127.0.83.1"), ("b", "127.0.83.2")):
            with open(os.path.join(d, f"{name}.ext"), "w") as f:
                f.write(f"subjectAltName=DNS:{name},IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n"
                        "keyUsage=critical,digitalSignature\n")
            ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}")
            ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
            with open(os.path.join(d, f"{name}.pem"), "w") as f:
                f.write(open(os.path.join(d, f"{name}.crt")).read() + open(os.path.join(d, f"{name}.key")).read())
        return d

    def start_haproxy(self, path, name, cfg):
        cf = os.path.join(self.workdir, f"haproxy-{path}-{name}.cfg")
        sock = os.path.join(self.workdir, f"haproxy-{path}-{name}.sock")
        cfg = cfg.replace("global\n", f"global\n  stats socket {sock} mode 600 level user\n", 1)
        self.hasock[f"{path}/haproxy-{name}"] = sock
        with open(cf, "w") as f:
            f.write(cfg)
        r = subprocess.run(["haproxy", "-c", "-q", "-f", cf], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise BenchError(f"haproxy -c {os.path.basename(cf)}: {(r.stdout + r.stderr).strip()[-400:]}")
        p = self.reg.spawn(["haproxy", "-db", "-f", cf], self.lp(f"haproxy-{path}-{name}"))
        self.proxies[path].append((f"haproxy-{name}", p))
        return p

    def setup_haproxy(self, path):
        tls = path == "haproxy2tls"
        if path == "haproxy1":
            ip = "127.0.81.1"
            cfg = HAPROXY_GLOBAL
            for svc, off in SERVICES:
                cfg += (f"listen {svc}\n  bind {ip}:{FRONT_BASE + off}\n"
                        f"  server s 127.0.0.1:{self.backend_port(path, svc)}\n")
            p = self.start_haproxy(path, "1", cfg)
            for _, off in SERVICES:
                wait_port(ip, FRONT_BASE + off, 10, p, "haproxy")
            self.front[path] = ip
            return
        ipa, ipb = ("127.0.83.1", "127.0.83.2") if tls else ("127.0.82.1", "127.0.82.2")
        d = self.make_certs() if tls else None
        cfg_b = HAPROXY_GLOBAL
        cfg_a = HAPROXY_GLOBAL
        for svc, off in SERVICES:
            bind_opts = f" ssl crt {d}/b.pem ca-file {d}/ca.pem verify required" if tls else ""
            srv_opts = f" ssl crt {d}/a.pem ca-file {d}/ca.pem verify required verifyhost b" if tls else ""
            cfg_b += (f"listen {svc}\n  bind {ipb}:{HOP_BASE + off}{bind_opts}\n"
                      f"  server s 127.0.0.1:{self.backend_port(path, svc)}\n")
            cfg_a += (f"listen {svc}\n  bind {ipa}:{FRONT_BASE + off}\n"
                      f"  server b {ipb}:{HOP_BASE + off}{srv_opts}\n")
        pb = self.start_haproxy(path, "B", cfg_b)
        for _, off in SERVICES:
            wait_port(ipb, HOP_BASE + off, 10, pb, "haproxy B")
        pa = self.start_haproxy(path, "A", cfg_a)
        for _, off in SERVICES:
            wait_port(ipa, FRONT_BASE + off, 10, pa, "haproxy A")
        # order in the tables: A then B
        self.proxies[path].sort(key=lambda x: x[0])
        self.front[path] = ipa

    def weft_cmd(self, *args, timeout=15.0):
        r = subprocess.run([self.weft, *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise BenchError(f"weft {' '.join(args)}: rc={r.returncode}: {(r.stdout + r.stderr).strip()[-500:]}")
        return r.stdout

    def setup_weft(self):
        w = os.path.join(self.workdir, "weft")
        os.makedirs(w, exist_ok=True)
        # a private copy: the binary under build/ may be rebuilt while we run
        self.weft = os.path.join(w, "weft")
        shutil.copy2(self.a.weft, self.weft)
        r = subprocess.run([self.weft, "--version"], capture_output=True, text=True, timeout=10)
        self.weft_version = (r.stdout or r.stderr).strip()
        key = os.path.join(w, "cluster.key")
        with open(key, "w") as f:
            f.write(self.weft_cmd("keygen").strip() + "\n")
        os.chmod(key, 0o600)
        d1, d2 = os.path.join(w, "d1"), os.path.join(w, "d2")
        rpc1, rpc2 = os.path.join(d1, "rpc.sock"), os.path.join(d2, "rpc.sock")
        common = ["--key-file", key, "--log-level", self.a.weft_log_level]
        pa = self.reg.spawn([self.weft, "agent", "--node", "a", "--bind", f"{WEFT_A}:{WEFT_PORT}", "--data-dir", d1]
                            + common, self.lp("weft-a"))
        self.proxies["weft"].append(("weft-a", pa))
        wait_port(WEFT_A, WEFT_PORT, 20, pa, "weft agent a")
        pb = self.reg.spawn([self.weft, "agent", "--node", "b", "--bind", f"{WEFT_B}:{WEFT_PORT}", "--data-dir", d2,
                             "--join", f"{WEFT_A}:{WEFT_PORT}"] + common, self.lp("weft-b"))
        self.proxies["weft"].append(("weft-b", pb))
        wait_port(WEFT_B, WEFT_PORT, 20, pb, "weft agent b")
        for sock, p, nm in ((rpc1, pa, "a"), (rpc2, pb, "b")):
            end = time.monotonic() + 20
            while not os.path.exists(sock):
                if p.poll() is not None or time.monotonic() > end:
                    raise BenchError(f"weft agent {nm}: no {sock} (rc={p.poll()}): {tail(self.lp('weft-' + nm))}")
                time.sleep(0.05)
        for svc, _ in SERVICES:
            self.weft_cmd("service", "register", svc, "--port", str(self.backend_port("weft", svc)), "--check", "tcp",
                          "--rpc", rpc2)
        for svc, off in SERVICES:
            self.weft_cmd("upstream", "add", svc, "--listen", f"{WEFT_A}:{FRONT_BASE + off}", "--rpc", rpc1)
        self.front["weft"] = WEFT_A
        # wait until every upstream has a passing instance
        end = time.monotonic() + self.a.weft_ready_timeout
        last = ""
        while True:
            for nm, p in (("a", pa), ("b", pb)):
                if p.poll() is not None:
                    raise BenchError(f"weft agent {nm} exited rc={p.returncode}: {tail(self.lp('weft-' + nm))}")
            try:
                last = self.weft_cmd("routes", "--json", "--rpc", rpc1)
                routes = json.loads(last)
                ok = {r.get("upstream"): any(i.get("health") == "passing" for i in r.get("instances", []))
                      for r in routes}
                if all(ok.get(svc) for svc, _ in SERVICES):
                    break
            except (BenchError, ValueError, subprocess.TimeoutExpired) as e:
                last = str(e)
            if time.monotonic() > end:
                raise BenchError(f"weft routes: no passing instance of every upstream after "
                                 f"{self.a.weft_ready_timeout:.0f} s: {last.strip()[-600:]}")
            time.sleep(0.25)
        self.weft_rpc = (rpc1, rpc2)
        for _, off in SERVICES:
            wait_port(WEFT_A, FRONT_BASE + off, 10, pa, "weft upstream")

    def setup(self):
        self.check_ports()
        self.start_backends()
        self.front["direct"] = "127.0.0.1"
        for path in list(self.a.paths):
            if path == "direct":
                continue
            try:
                if path == "weft":
                    self.setup_weft()
                else:
                    self.setup_haproxy(path)
                log(f"{path}: up ({', '.join(f'{n} pid {p.pid}' for n, p in self.proxies[path])})")
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                log(f"{path}: SETUP FAILED: {e}")
                self.errors[path].append(f"setup: {e}")
                for _, p in self.proxies[path]:
                    self.reg.stop(p)
                self.proxies[path] = []
                self.a.paths.remove(path)

    def port(self, path, svc):
        off = dict(SERVICES)[svc]
        return self.backend_port(path, svc) if path == "direct" else FRONT_BASE + off

    def addr(self, path, svc):
        return self.front[path], self.port(path, svc)

    def alive(self, path):
        for n, p in self.proxies[path]:
            if p.poll() is not None:
                raise BenchError(f"{n} (pid {p.pid}) died rc={p.returncode}: {tail(self.reg.logs.get(p.pid, ''))}")

    # -- measurement helpers ------------------------------------------------------------------

    def cpu(self, path):
        return [cpu_s(p.pid) for _, p in self.proxies[path]]

    def rss(self, path):
        return [rss_kib(p.pid) for _, p in self.proxies[path]]


# ---------------------------------------------------------------------------------------------
# correctness


def check_download(b, path, timeout):
    ip, port = b.addr(path, "web")
    h = hashlib.sha256()
    n = 0
    t0 = time.monotonic()
    with socket.create_connection((ip, port), timeout=10) as s:
        s.settimeout(timeout)
        s.sendall(b"GET /big HTTP/1.0\r\nHost: bench\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise BenchError("download: closed before the headers")
            buf += d
        head, _, body = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"download: {head[:40]!r}")
        h.update(body)
        n = len(body)
        while True:
            if time.monotonic() - t0 > timeout:
                raise BenchError(f"download: {n} bytes after {timeout:.0f} s")
            d = s.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
    ok = n == b.a.check_mib << 20 and h.hexdigest() == b.big_sha
    return {"ok": ok, "bytes": n, "s": time.monotonic() - t0}


def check_upload(b, path, timeout, rng):
    ip, port = b.addr(path, "sink")
    total = b.a.check_mib << 20
    data = os.urandom(total)
    want = hashlib.sha256(data).hexdigest()
    t0 = time.monotonic()
    with socket.create_connection((ip, port), timeout=10) as s:
        s.settimeout(timeout)
        off = 0
        while off < total:
            k = min(total - off, rng.choice((1, 7, 100, 1500, 16384, 65536, 1 << 20, rng.randint(1, 1 << 20))))
            s.sendall(data[off:off + k])
            off += k
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            if time.monotonic() - t0 > timeout:
                raise BenchError("upload: no reply in time")
            d = s.recv(4096)
            if not d:
                break
            reply += d
    got = reply.decode(errors="replace").strip()
    return {"ok": got == want, "bytes": total, "s": time.monotonic() - t0, "reply": got[:16]}


def correctness(b):
    rng = random.Random(1)
    res = {}
    for path in b.a.paths:
        r = {}
        for kind, fn in (("download", lambda: check_download(b, path, b.a.check_timeout)),
                         ("upload", lambda: check_upload(b, path, b.a.check_timeout, rng))):
            try:
                r[kind] = fn()
            except (OSError, BenchError) as e:
                r[kind] = {"ok": False, "error": str(e)}
        res[path] = r
        log(f"[check] {path}: download {'ok' if r['download']['ok'] else 'FAIL ' + str(r['download'])}, "
            f"upload {'ok' if r['upload']['ok'] else 'FAIL ' + str(r['upload'])} ({b.a.check_mib} MiB each)")
    return res


# ---------------------------------------------------------------------------------------------
# load runs

UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(text):
    r = {"errors": 0, "non2xx": 0}
    for m in re.finditer(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        r[f"p{m.group(1)}_us"] = float(m.group(2)) * UNIT[m.group(3)] * 1e6
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
        r["wall_s"] = float(m.group(2)) * UNIT[m.group(3)]
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["socket_errors"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups())}
        r["errors"] = sum(r["socket_errors"].values())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    if "rps" not in r or "p50_us" not in r:
        raise BenchError("wrk output not understood: " + text.strip()[-300:])
    return r


class RssSampler(threading.Thread):
    def __init__(self, b, path, period=0.5):
        super().__init__(daemon=True)
        self.b, self.path, self.period = b, path, period
        self.stop_ev = threading.Event()
        self.peak = [0] * len(b.proxies[path])
        self.samples = []

    def run(self):
        while not self.stop_ev.wait(self.period):
            try:
                v = self.b.rss(self.path)
            except OSError:
                continue
            self.samples.append(sum(v))
            self.peak = [max(a, c) for a, c in zip(self.peak, v)]


def run_wrk(b, path, conns, threads, close=False, sample_rss=False, tag=""):
    ip, port = b.addr(path, "web")
    d = b.a.duration
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{d:g}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{ip}:{port}/1k")
    b.alive(path)
    sampler = RssSampler(b, path) if sample_rss and b.proxies[path] else None
    c0 = b.cpu(path)
    if sampler:
        sampler.start()
    rc, text = run_client(b.reg, argv, b.lp(f"wrk-{path}-{tag}"), timeout=d + 30)
    c1 = b.cpu(path)
    if sampler:
        sampler.stop_ev.set()
        sampler.join()
    if rc != 0:
        raise BenchError(f"wrk rc={rc}: {text.strip()[-300:]}")
    r = parse_wrk(text)
    cpu = sum(c1) - sum(c0)
    r["proxy_cpu_s"] = [round(y - x, 3) for x, y in zip(c0, c1)]
    if b.proxies[path] and r.get("requests"):
        r["cpu_us_per_req"] = cpu / r["requests"] * 1e6
    if sampler:
        r["rss_load_kib"] = sampler.peak
    return r


def run_iperf(b, path, tag=""):
    ip, port = b.addr(path, "iperf")
    d = b.a.duration
    argv = ["iperf3", "-c", ip, "-p", str(port), "-t", f"{d:g}", "-P", "1", "-J", "--connect-timeout", "5000"]
    b.alive(path)
    c0 = b.cpu(path)
    rc, text = run_client(b.reg, argv, b.lp(f"iperf3-{path}-{tag}"), timeout=d + 30)
    c1 = b.cpu(path)
    try:
        j = json.loads(text)
    except ValueError:
        raise BenchError(f"iperf3 rc={rc}: output not JSON: {text.strip()[-300:]}")
    if j.get("error") or rc != 0:
        raise BenchError(f"iperf3 rc={rc}: {j.get('error')}")
    recv = j["end"]["sum_received"]
    r = {"gbps": recv["bits_per_second"] / 1e9, "bytes": recv["bytes"], "seconds": recv["seconds"],
         "retransmits": j["end"].get("sum_sent", {}).get("retransmits")}
    gb = recv["bytes"] / GB
    r["proxy_cpu_s"] = [round(y - x, 3) for x, y in zip(c0, c1)]
    r["cpu_s_per_gb"] = [(y - x) / gb for x, y in zip(c0, c1)] if gb > 0 else []
    return r


def idle_conns(b, path, count, timeout):
    """Opens `count` keep-alive connections through the path to nginx, one request each, then idle.
    Returns the RSS growth of the path's proxy processes."""
    ip, port = b.addr(path, "web")
    req = b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n"
    gc = 3.0
    time.sleep(0.5)
    before = b.rss(path)
    socks = []
    sel = selectors.DefaultSelector()
    pending = {}
    t0 = time.monotonic()
    try:
        # connect in batches of 100 (listen backlogs) and wait for every reply
        for k in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((ip, port))
            socks.append(s)
            pending[s] = b""
            sel.register(s, selectors.EVENT_WRITE)
            if len(pending) >= 100 or k == count - 1:
                while pending:
                    if time.monotonic() - t0 > timeout:
                        raise BenchError(f"idle conns: {len(pending)} of a batch unanswered after {timeout:.0f} s "
                                         f"({len(socks)} opened)")
                    for key, ev in sel.select(timeout=1.0):
                        s2 = key.fileobj
                        if ev & selectors.EVENT_WRITE:
                            err = s2.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err:
                                raise BenchError(f"idle conns: connect: {os.strerror(err)} ({len(socks)} opened)")
                            s2.send(req)
                            sel.modify(s2, selectors.EVENT_READ)
                        else:
                            d = s2.recv(65536)
                            if not d:
                                raise BenchError(f"idle conns: closed by the path ({len(socks)} opened)")
                            pending[s2] += d
                            buf = pending[s2]
                            hdr, sep, body = buf.partition(b"\r\n\r\n")
                            if sep and len(body) >= 1024:
                                sel.unregister(s2)
                                del pending[s2]
        time.sleep(gc)
        b.alive(path)
        after = b.rss(path)
        # all still open? (a proxy may have closed them)
        closed = 0
        for s in socks:
            try:
                d = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                if d == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        delta = [a - c for a, c in zip(after, before)]
        return {"count": count, "rss_before_kib": before, "rss_after_kib": after, "closed_at_end": closed,
                "bytes_per_conn": sum(delta) * 1024.0 / count, "seconds_to_open": time.monotonic() - t0 - gc}
    finally:
        sel.close()
        for s in socks:
            s.close()
        time.sleep(1.0)


def weft_libs(b):
    """Which AEAD library each agent really runs: libcrypto is dlopen'ed on first use (libsodium
    is the fallback), so look at the mappings once traffic has gone through."""
    out = {}
    for n, p in b.proxies["weft"]:
        libs = set()
        try:
            with open(f"/proc/{p.pid}/maps") as f:
                for line in f:
                    base = os.path.basename(line.split()[-1]) if "/" in line else ""
                    if base.startswith(("libcrypto", "libsodium", "libssl")):
                        libs.add(base)
        except OSError:
            pass
        out[n] = sorted(libs)
    return out


def haproxy_info(b):
    """`show info` TLS counters of each haproxy (does A resume its TLS sessions to B?)."""
    keys = ("SslFrontendKeyRate", "SslFrontendMaxKeyRate", "SslFrontendSessionReuse_pct", "SslBackendKeyRate",
            "SslBackendMaxKeyRate", "SslCacheLookups", "SslCacheMisses", "CumSslConns", "CumConns")
    out = {}
    for name, sock in b.hasock.items():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(sock)
                s.sendall(b"show info\n")
                buf = b""
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    buf += d
            info = dict(x.split(": ", 1) for x in buf.decode(errors="replace").splitlines() if ": " in x)
            out[name] = {k: info[k] for k in keys if k in info}
        except OSError as e:
            out[name] = {"error": str(e)}
    return out


# ---------------------------------------------------------------------------------------------
# the rounds


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def bench(b):
    a = b.a
    res = {"paths": list(a.paths), "rounds": [], "errors": b.errors}
    res["idle_rss_kib"] = {p: dict(zip([n for n, _ in b.proxies[p]], b.rss(p))) for p in a.paths}
    # idle connections first, on fresh processes: later runs warm the allocators and pools
    if "idle" in a.steps:
        res["idle_conns"] = {}
        for path in a.paths:
            if path == "direct":
                continue
            try:
                v = idle_conns(b, path, a.idle_conns, a.check_timeout)
            except (BenchError, OSError) as e:
                log(f"[idle] {path}: ERROR {e}")
                b.errors[path].append(f"idle conns: {e}")
                v = {"error": str(e)}
            res["idle_conns"][path] = v
            if "error" not in v:
                log(f"[idle] {path}: {v['count']} idle connections: {v['bytes_per_conn']:.0f} B per connection "
                    f"(RSS KiB {v['rss_before_kib']} -> {v['rss_after_kib']}; {v['closed_at_end']} closed by the path)")
    res["check"] = correctness(b)
    if "weft" in a.paths:
        res["weft_crypto_libs"] = weft_libs(b)
        log("[weft] crypto libraries mapped after the checks: "
            + "; ".join(f"{n}: {', '.join(v) or 'none'}" for n, v in res["weft_crypto_libs"].items()))
    steps = [("bulk", lambda p, t: run_iperf(b, p, t)),
             ("lat1", lambda p, t: run_wrk(b, p, 1, 1, tag=t)),
             ("c32", lambda p, t: run_wrk(b, p, 32, 2, tag=t)),
             ("c256", lambda p, t: run_wrk(b, p, 256, 2, sample_rss=True, tag=t)),
             ("conn", lambda p, t: run_wrk(b, p, 32, 2, close=True, tag=t))]
    for r in range(a.rounds):
        R = {}
        res["rounds"].append(R)
        for step, fn in steps:
            if step not in a.steps:
                continue
            order = list(a.paths) if r % 2 == 0 else list(reversed(a.paths))
            for path in order:
                tag = f"r{r + 1}-{step}"
                try:
                    v = fn(path, tag)
                except (BenchError, OSError) as e:
                    log(f"[round {r + 1}] {step} {path}: ERROR {e}")
                    b.errors[path].append(f"round {r + 1} {step}: {e}")
                    v = {"error": str(e)}
                R.setdefault(step, {})[path] = v
                log(f"[round {r + 1}] {step:4s} {path:11s} " + brief(step, v))
                time.sleep(a.pause)
    res["haproxy_info"] = haproxy_info(b)
    if "weft" in a.paths:
        res["weft_stats"] = {}
        for nm, rpc in zip(("a", "b"), b.weft_rpc):
            try:
                res["weft_stats"][nm] = json.loads(b.weft_cmd("stats", "--json", "--rpc", rpc))
            except (BenchError, ValueError, subprocess.TimeoutExpired) as e:
                res["weft_stats"][nm] = {"error": str(e)}
        res["weft_log_lines"] = {}
        for nm in ("weft-a", "weft-b"):
            try:
                with open(b.lp(nm), "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()
            except OSError:
                lines = []
            res["weft_log_lines"][nm] = {"count": len(lines), "first": lines[:5], "last": lines[-5:]}
    # post-run check that the proxies survived everything
    for path in a.paths:
        try:
            b.alive(path)
        except BenchError as e:
            b.errors[path].append(str(e))
    return res


def brief(step, v):
    if "error" in v:
        return "ERROR"
    if step == "bulk":
        return f"{v['gbps']:.2f} Gbit/s, CPU s/GB {'/'.join(f'{x:.2f}' for x in v['cpu_s_per_gb']) or '-'}"
    s = f"{v['rps']:.0f} req/s, p50 {v['p50_us']:.0f} us, p99 {v['p99_us']:.0f} us"
    if v.get("cpu_us_per_req") is not None:
        s += f", proxy CPU {v['cpu_us_per_req']:.1f} us/req"
    if v.get("errors") or v.get("non2xx"):
        s += f", ERRORS {v.get('socket_errors')} non2xx {v.get('non2xx')}"
    return s


# ---------------------------------------------------------------------------------------------
# summary


def summarize(b, res):
    a = b.a
    paths = a.paths
    rounds = res["rounds"]

    def vals(step, path, key):
        out = []
        for R in rounds:
            v = R.get(step, {}).get(path)
            if v and "error" not in v and v.get(key) is not None:
                out.append(v[key])
        return out

    S = {p: {} for p in paths}
    for p in paths:
        S[p]["gbps"] = median(vals("bulk", p, "gbps"))
        g = vals("bulk", p, "gbps")
        S[p]["gbps_range"] = (min(g), max(g)) if g else None
        per = vals("bulk", p, "cpu_s_per_gb")
        S[p]["cpu_s_per_gb"] = [median([x[i] for x in per]) for i in range(len(per[0]))] if per and per[0] else None
        for step, key in (("lat1", "p50_us"), ("lat1", "p99_us"), ("c32", "rps"), ("c32", "p99_us"),
                          ("c256", "rps"), ("c256", "p99_us"), ("conn", "rps"), ("conn", "p99_us"),
                          ("c32", "cpu_us_per_req"), ("c256", "cpu_us_per_req"), ("conn", "cpu_us_per_req")):
            S[p][f"{step}_{key}"] = median(vals(step, p, key))
        # added p50: per round against direct of the same round
        added = []
        for R in rounds:
            v, d = R.get("lat1", {}).get(p), R.get("lat1", {}).get("direct")
            if v and d and "error" not in v and "error" not in d:
                added.append(v["p50_us"] - d["p50_us"])
        S[p]["added_p50_us"] = median(added) if "direct" in paths else None
        loads = vals("c256", p, "rss_load_kib")
        S[p]["rss_load_kib"] = sum(max(x[i] for x in loads) for i in range(len(loads[0]))) if loads and loads[0] else None
        idle = res["idle_rss_kib"].get(p, {})
        S[p]["rss_idle_kib"] = sum(idle.values()) if idle else None
        ic = res.get("idle_conns", {}).get(p)
        S[p]["idle_conn_bytes"] = ic.get("bytes_per_conn") if ic and "error" not in ic else None
        errs, non2xx = 0, 0
        for R in rounds:
            for step in ("lat1", "c32", "c256", "conn"):
                v = R.get(step, {}).get(p)
                if v and "error" not in v:
                    errs += v.get("errors", 0)
                    non2xx += v.get("non2xx", 0)
        S[p]["wrk_socket_errors"] = errs
        S[p]["wrk_non2xx"] = non2xx
        chk = res["check"].get(p, {})
        S[p]["check_download"] = chk.get("download", {}).get("ok")
        S[p]["check_upload"] = chk.get("upload", {}).get("ok")
    res["summary"] = S

    # rows: (label, key, fmt, target text, pass fn on ratio (or on weft's value when absolute))
    def ge(x):
        return lambda r, w: None if r is None else r >= x

    def le(x):
        return lambda r, w: None if r is None else r <= x

    rows = [
        ("throughput Gbit/s (iperf3, 1 stream)", "gbps", "{:.2f}", ">= 1.3x", ge(1.3)),
        ("  range over rounds", "gbps_range", "range", "", None),
        ("  CPU s/GB per proxy process", "cpu_s_per_gb", "list", "", None),
        ("p50 us @1 conn (wrk, 1 KiB)", "lat1_p50_us", "{:.0f}", "", None),
        ("added p50 us @1 conn (vs direct)", "added_p50_us", "{:.0f}", "<= 0.75x", le(0.75)),
        ("p99 us @1 conn", "lat1_p99_us", "{:.0f}", "", None),
        ("requests/s @32 conns", "c32_rps", "{:.0f}", ">= 1.2x", ge(1.2)),
        ("p99 ms @32 conns", "c32_p99_us", "ms", "", None),
        ("requests/s @256 conns", "c256_rps", "{:.0f}", ">= 1.2x", ge(1.2)),
        ("p99 ms @256 conns", "c256_p99_us", "ms", "<= 0.5x", le(0.5)),
        ("new connections/s @32 (Connection: close)", "conn_rps", "{:.0f}", ">= 5x", ge(5.0)),
        ("p99 ms new connections", "conn_p99_us", "ms", "", None),
        ("proxy CPU us per request @32", "c32_cpu_us_per_req", "{:.1f}", "", None),
        ("proxy CPU us per request @256", "c256_cpu_us_per_req", "{:.1f}", "", None),
        ("proxy CPU us per new connection", "conn_cpu_us_per_req", "{:.1f}", "", None),
        ("RSS MiB idle (all proxy processes)", "rss_idle_kib", "mib", "", None),
        ("RSS MiB under load @256 (peak)", "rss_load_kib", "mib", "", None),
        (f"memory B per idle connection ({a.idle_conns} open)", "idle_conn_bytes", "{:.0f}", "<= 8 KiB (weft)",
         "abs"),
        (f"byte-exact download {a.check_mib} MiB", "check_download", "ok", "ok", "okrow"),
        (f"byte-exact upload {a.check_mib} MiB + half-close", "check_upload", "ok", "ok", "okrow"),
        ("wrk socket errors (all runs)", "wrk_socket_errors", "{:d}", "0", "zero"),
        ("wrk non-2xx responses (all runs)", "wrk_non2xx", "{:d}", "0", "zero"),
    ]

    def fmt(v, f):
        if v is None:
            return "-"
        if f == "range":
            return f"{v[0]:.2f}-{v[1]:.2f}"
        if f == "list":
            return "/".join(f"{x:.2f}" for x in v) or "-"
        if f == "ms":
            return f"{v / 1000.0:.2f}"
        if f == "mib":
            return f"{v / 1024.0:.1f}"
        if f == "ok":
            return "ok" if v else "FAIL"
        return f.format(v)

    out = []
    for label, key, f, target, test in rows:
        cells = [fmt(S[p].get(key), f) if p in S else "n/a" for p in ALL_PATHS]
        w = S.get("weft", {}).get(key)
        h = S.get("haproxy2tls", {}).get(key)
        ratio = None
        if isinstance(w, (int, float)) and isinstance(h, (int, float)) and not isinstance(w, bool) and h:
            ratio = w / h
        verdict = "-"
        if test == "abs":
            verdict = "-" if w is None else ("pass" if w <= 8192 else "FAIL")
        elif test == "okrow":
            verdict = "-" if w is None else ("pass" if w else "FAIL")
        elif test == "zero":
            verdict = "-" if "weft" not in S else ("pass" if w == 0 else "FAIL")
        elif test is not None:
            t = test(ratio, w)
            verdict = "-" if t is None else ("pass" if t else "FAIL")
        rtxt = "-" if ratio is None or f in ("ok",) else f"{ratio:.2f}"
        out.append([label] + cells + [rtxt, target, verdict])
    res["table"] = out
    return out


def print_table(rows):
    hdr = ["metric"] + [LABEL[p] for p in ALL_PATHS] + ["weft/HAProxy-TLS", "target", "weft"]
    widths = [max(len(str(r[k])) for r in rows + [hdr]) for k in range(len(hdr))]
    line = "  ".join(str(h).ljust(widths[k]) if k == 0 else str(h).rjust(widths[k]) for k, h in enumerate(hdr))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(v).ljust(widths[k]) if k == 0 else str(v).rjust(widths[k]) for k, v in enumerate(r)))


def versions(b):
    def first(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    return {"haproxy": first(["haproxy", "-v"]), "nginx": first(["nginx", "-v"]), "iperf3": first(["iperf3", "--version"]),
            "wrk": first(["wrk", "--version"]), "openssl": first(["openssl", "version"]), "weft": b.weft_version,
            "weft_binary": weft_origin(b)}


def weft_origin(b):
    """Which weft was measured: the binary's mtime and the state of the tree it sits in."""
    if not b.a.weft:
        return None
    src = os.path.realpath(b.a.weft)
    out = {"path": src, "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(src)))}
    try:
        d = os.path.dirname(src)
        out["git_head"] = subprocess.run(["git", "-C", d, "rev-parse", "--short", "HEAD"], capture_output=True,
                                         text=True, timeout=10).stdout.strip()
        st = subprocess.run(["git", "-C", d, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                            text=True, timeout=10).stdout.split("\n")
        out["modified_files"] = [x[3:] for x in st if x.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


# ---------------------------------------------------------------------------------------------
# main


def cleanup(b):
    for sg in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sg, signal.SIG_IGN)
    b.reg.kill_all()
    if b.a.keep_logs:
        dst = b.a.keep_logs
        os.makedirs(dst, exist_ok=True)
        for root, _, files in os.walk(b.workdir):
            for fn in files:
                if fn.endswith(".log") or fn.endswith(".cfg") or fn == "nginx.conf":
                    src = os.path.join(root, fn)
                    try:
                        shutil.copy(src, os.path.join(dst, os.path.relpath(src, b.workdir).replace("/", "_")))
                    except OSError:
                        pass
    if b.own_workdir:
        shutil.rmtree(b.workdir, ignore_errors=True)
    else:
        # the wrapper removes its dir; still drop the big files and key material now
        for sub in ("www", "tls", "weft"):
            shutil.rmtree(os.path.join(b.workdir, sub), ignore_errors=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description="weft's data plane against HAProxy on loopback (see the module doc).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weft", help="weft binary (needed for the weft path)")
    p.add_argument("--paths", default=",".join(ALL_PATHS), help="comma-separated subset of " + ",".join(ALL_PATHS))
    p.add_argument("--steps", default="bulk,lat1,c32,c256,conn,idle", help="measurements to run")
    p.add_argument("--quick", action="store_true", help="1 round of 3 s runs, 200 idle conns, 8 MiB checks")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per iperf3/wrk run")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--idle-conns", type=int, default=1000)
    p.add_argument("--check-mib", type=int, default=64, help="size of the byte-exact download and upload")
    p.add_argument("--check-timeout", type=float, default=120.0)
    p.add_argument("--weft-ready-timeout", type=float, default=60.0, help="for routes to show passing")
    p.add_argument("--weft-log-level", default="warn")
    p.add_argument("--json", help="write every figure (and every run) as JSON")
    p.add_argument("--keep-logs", help="copy the logs and configs here at exit")
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--pidfile", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.idle_conns, a.check_mib, a.pause = 1, 3.0, 200, 8, 0.5
    a.paths = [x for x in a.paths.split(",") if x]
    for x in a.paths:
        if x not in ALL_PATHS:
            p.error(f"unknown path {x}")
    a.paths = [x for x in ALL_PATHS if x in a.paths]
    a.steps = [x for x in a.steps.split(",") if x]
    for x in a.steps:
        if x not in ("bulk", "lat1", "c32", "c256", "conn", "idle"):
            p.error(f"unknown step {x}")
    if "weft" in a.paths and not (a.weft and os.access(a.weft, os.X_OK)):
        p.error("--weft PATH to the weft binary is needed for the weft path (or leave it out of --paths)")
    for tool in ("haproxy", "nginx", "iperf3", "wrk", "openssl"):
        if not shutil.which(tool):
            p.error(f"{tool} not found (bench/haproxy_bench.sh installs it)")
    return a


def main(argv):
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 65536)) if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 4 * args.idle_conns + 1024:
        sys.exit(f"proxy_bench: open files limit {want} is too low for --idle-conns {args.idle_conns} (ulimit -n)")
    b = Bench(args)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)

    for sg in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sg, on_signal)
    try:
        t0 = time.monotonic()
        load0 = os.getloadavg()
        log(f"paths {','.join(args.paths)}; {args.rounds} round(s) of {args.duration:g} s runs; work dir {b.workdir}")
        b.setup()
        res = bench(b)
        res["config"] = {k: v for k, v in vars(args).items() if k not in ("workdir", "pidfile")}
        res["versions"] = versions(b)
        res["host"] = {"nproc": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg()}
        res["wall_s"] = time.monotonic() - t0
        rows = summarize(b, res)
        v = res["versions"]
        print(f"\n==== summary: weft vs HAProxy, loopback, {args.rounds} interleaved round(s) of {args.duration:g} s, "
              f"medians ====")
        print(f"{v['haproxy']}; {v['nginx']}; {v['iperf3']}; {v['wrk']}; {v['openssl']}; weft {v['weft'] or '-'}")
        wo = v.get("weft_binary")
        if wo and "weft" in args.paths:
            print(f"weft binary {wo['path']} built {wo['mtime']}; its tree is now at {wo.get('git_head', '?')}"
                  + (f", uncommitted changes to {', '.join(wo['modified_files'])} (newer or older than the binary)"
                     if wo.get("modified_files") else ", clean"))
        print_table(rows)
        for name, info in res.get("haproxy_info", {}).items():
            if name.startswith("haproxy2tls/") and info:
                print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        for nm, st in res.get("weft_stats", {}).items():
            if "error" in st:
                print(f"  weft stats {nm}: {st['error']}")
                continue
            ups = st.get("upstreams", {})
            print(f"  weft agent {nm}: handshakes_failed {st.get('handshakes_failed')}, protocol_errors "
                  f"{st.get('protocol_errors')}, records_rejected {st.get('records_rejected')}, sessions "
                  f"initiated/accepted/open {st.get('sessions_initiated')}/{st.get('sessions_accepted')}/"
                  f"{st.get('sessions_open')}" + "".join(
                      f"; upstream {u}: connections {v.get('connections')}, failures {v.get('failures')}, "
                      f"retries {v.get('retries')}, ejections {v.get('ejections')}" for u, v in sorted(ups.items())))
        if res.get("weft_crypto_libs"):
            print("  weft crypto libraries mapped: " + "; ".join(
                f"{n} {', '.join(v) or 'none'}" for n, v in res["weft_crypto_libs"].items()))
        for nm, L in res.get("weft_log_lines", {}).items():
            if L["count"]:
                print(f"  {nm} log ({L['count']} lines at --weft-log-level {args.weft_log_level}): "
                      + " | ".join(L["first"][:3]))
        for p in ALL_PATHS:
            for e in b.errors.get(p, []):
                print(f"  {p} error: {e}")
        print(f"\nwall {res['wall_s']:.0f} s; load average at start {load0[0]:.2f}, at end {os.getloadavg()[0]:.2f} "
              f"({os.cpu_count()} cores)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1, default=str)
            print(f"results: {args.json}")
        bad = any(b.errors[p] for p in ALL_PATHS)
        return 1 if bad else 0
    except BenchError as e:
        log(f"ERROR {e}")
        return 2
    finally:
        cleanup(b)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
