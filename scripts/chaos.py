#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Fault-injection harness for a brokerha cluster: real processes, real partitions and packet
loss, kill -9, drains, takeovers; a table of what was lost, per fault class.

    sudo /usr/bin/python3 scripts/chaos.py --seed 7 --nodes 3 --duration 90
    sudo /usr/bin/python3 scripts/chaos.py --seed 20250101 --nodes 5 --duration 1800 \\
        --report chaos-report.md

Run as root with Debian's python3 (python3-paho-mqtt 1.6.1); nothing else outside the standard
library. docs/fault-harness.md describes the fault classes, the load, every column of the
table and what cannot be simulated. In short:

- Network: a router namespace holds a bridge, the DNS SRV server (tests/support/dns_server.py)
  and every MQTT client of the harness; each node runs in its own namespace, joined to the
  bridge by a veth pair. Faults are nftables rules in the node's namespace. Everything created
  is deleted on every exit path (also Ctrl-C and SIGTERM); processes are stopped by pid.
- Faults come from --seed: the sequence of faults and their parameters is the same for a seed
  (the clients' own timings are not). They run one after another, never overlapping.
- Load: sequenced QoS 1 and QoS 2 publishers (clean sessions) and persistent subscribers
  (clean start 0 / clean session 0, session expiry 300 s), MQTT v5 and v3.1.1, each moving to a
  random live node after a drop; a retained writer updating and deleting entries of a
  preloaded retained set.
- Exit status: 0 when every judged column is 0, 1 when one is not, 2 when the cluster or its
  network could not be set up (no namespaces: a failure, never a skip), 3 on a harness error.
"""

import argparse
import base64
import bisect
import collections
import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DNS_SERVER = os.path.join(ROOT, "tests", "support", "dns_server.py")
DEFAULT_SERVER = os.path.join(ROOT, "build", "ci", "brokerha-server", "brokerha-server")

SUBNET = "10.231.0"          # private to the namespaces this harness creates
ROUTER_IP = SUBNET + ".1"
MQTT_PORT = 1883
API_PORT = 8080
CLUSTER_PORT = 7946
DOMAIN = "_cluster._tcp.chaos.test"
SESSION_EXPIRY = 300
SESSION_WAIT_MS = 12500      # shutdown.session_wait written into every node's config
GRACE_MS = 25000             # shutdown.grace_period
KEEPALIVE = 10

# Fault classes, in the order of the table. Every class is judged alike; a class is left out
# of a run with --faults, never by judging it less.
FAULT_CLASSES = [
    ("kill9", "kill -9 of one node, restarted after 1-5 s"),
    ("drain", "SIGTERM (graceful drain) of one node, restarted after 1-3 s"),
    ("partition", "one node cut off from its peers, both directions, 1-20 s"),
    ("oneway", "one node's packets to its peers (or theirs to it) dropped, 1-20 s"),
    ("loss", "5-20 % of one node's packets dropped (in and out), 5-20 s"),
    ("takeover", "a persistent subscriber connects to another node while connected"),
    ("burst", "500-2,000 subscriptions at once on one node, each probed from another"),
    ("joiner", "a node drained and started empty while the large retained set exists"),
    ("bigsession", "an offline session larger than one link frame resumed on another node"),
]
CLASS_NAMES = [c for c, _ in FAULT_CLASSES]

CLONE_NEWNET = 0x40000000


def now():
    return time.monotonic()


class SetupError(Exception):
    """The namespaces, the DNS server or the cluster could not be brought up."""


class Interrupted(Exception):
    """SIGINT or SIGTERM."""


# --- logging -------------------------------------------------------------------------------------

T0 = now()
LOG_LOCK = threading.Lock()


def log(msg):
    with LOG_LOCK:
        sys.stdout.write("[%7.1f] %s\n" % (now() - T0, msg))
        sys.stdout.flush()


# --- commands ------------------------------------------------------------------------------------

def run(cmd, check=True, input_text=None, timeout=20):
    p = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                                (p.stderr or p.stdout).strip()))
    return p


# --- network -------------------------------------------------------------------------------------

class Net:
    """A router namespace with a bridge, and one namespace per node joined to it by a veth
    pair. Every name carries the harness's pid, so two runs never collide."""

    def __init__(self, n_nodes):
        tag = "bhc%d" % os.getpid()
        self.router = tag + "-r"
        self.nodes = ["%s-n%d" % (tag, i) for i in range(1, n_nodes + 1)]
        self.created = []        # namespaces, in creation order
        self.home_fd = None
        self.in_router = False
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)

    @staticmethod
    def node_ip(i):
        return "%s.%d" % (SUBNET, 10 + i)

    def setup(self):
        if os.geteuid() != 0:
            raise SetupError("must run as root (network namespaces, nftables)")
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise SetupError("%s is not installed (scripts/install-deps.sh)" % tool)
        try:
            self._add_ns(self.router)
            r = self.router
            run(["ip", "-n", r, "link", "set", "lo", "up"])
            run(["ip", "-n", r, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", r, "addr", "add", ROUTER_IP + "/24", "dev", "br0"])
            run(["ip", "-n", r, "link", "set", "br0", "up"])
            for i, ns in enumerate(self.nodes, start=1):
                self._add_ns(ns)
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
                # Both ends are created inside the namespaces: nothing appears in ours.
                run(["ip", "-n", r, "link", "add", "n%d" % i, "type", "veth", "peer", "name",
                     "eth0", "netns", ns])
                run(["ip", "-n", r, "link", "set", "n%d" % i, "master", "br0"])
                run(["ip", "-n", r, "link", "set", "n%d" % i, "up"])
                run(["ip", "-n", ns, "addr", "add", self.node_ip(i) + "/24", "dev", "eth0"])
                run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input_text=(
                    "table inet chaos {\n"
                    "  chain input { type filter hook input priority 0; policy accept; }\n"
                    "  chain output { type filter hook output priority 0; policy accept; }\n"
                    "}\n"))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            raise SetupError("cannot create the network namespaces: %s" % e)

    def _add_ns(self, ns):
        run(["ip", "netns", "add", ns])
        self.created.append(ns)

    def enter_router(self):
        """Moves this process's main thread (and every thread it starts later) into the
        router namespace, where the DNS server, the clients and the HTTP checks live."""
        self.home_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open("/var/run/netns/" + self.router, os.O_RDONLY)
        try:
            if self.libc.setns(fd, CLONE_NEWNET) != 0:
                raise SetupError("setns(%s): %s" % (self.router, os.strerror(ctypes.get_errno())))
        finally:
            os.close(fd)
        self.in_router = True

    def leave_router(self):
        if self.in_router and self.home_fd is not None:
            self.libc.setns(self.home_fd, CLONE_NEWNET)
            self.in_router = False
        if self.home_fd is not None:
            os.close(self.home_fd)
            self.home_fd = None

    # Faults: rules in the node's own `inet chaos` table. Faults never overlap, so healing
    # flushes both chains.
    def nft(self, i, script):
        run(["ip", "netns", "exec", self.nodes[i - 1], "nft", "-f", "-"], input_text=script)

    def peers_set(self, i, n):
        return "{ %s }" % ", ".join(self.node_ip(j) for j in range(1, n + 1) if j != i)

    def partition(self, i, n, direction):
        rules = ""
        peers = self.peers_set(i, n)
        if direction in ("both", "out"):
            rules += "add rule inet chaos output ip daddr %s drop\n" % peers
        if direction in ("both", "in"):
            rules += "add rule inet chaos input ip saddr %s drop\n" % peers
        self.nft(i, rules)

    def loss(self, i, percent):
        self.nft(i, "add rule inet chaos input iifname \"eth0\" numgen random mod 100 < %d drop\n"
                    "add rule inet chaos output oifname \"eth0\" numgen random mod 100 < %d drop\n"
                    % (percent, percent))

    def heal(self, i):
        self.nft(i, "flush chain inet chaos input\nflush chain inet chaos output\n")

    def teardown(self):
        self.leave_router()
        errors = []
        for ns in reversed(self.created):
            if ns != self.router:
                run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "chaos"],
                    check=False)
            p = run(["ip", "netns", "del", ns], check=False)
            if p.returncode != 0:
                errors.append("%s: %s" % (ns, p.stderr.strip()))
        self.created = []
        left = [l.split()[0] for l in run(["ip", "netns", "list"], check=False).stdout.splitlines()
                if l.startswith("bhc%d-" % os.getpid())]
        if errors or left:
            log("teardown: could not delete %s" % (errors or left))
        return not (errors or left)


# --- HTTP ----------------------------------------------------------------------------------------

HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(ip, path, body=None, timeout=5.0):
    """(status, bytes); status -1 when there was no answer."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request("http://%s:%d%s" % (ip, API_PORT, path), data=data,
                                 headers=headers)
    try:
        with HTTP.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return -1, b""


def retained_set(ip, timeout=30.0):
    """{topic: payload bytes} of the node's retained chaos/r/# entries, or None."""
    st, body = http(ip, "/api/mqtt/topic/messages", {"topic": "chaos/r/#"}, timeout=timeout)
    if st != 200:
        return None
    try:
        msgs = json.loads(body)
    except ValueError:
        return None
    return {m["TopicName"]: base64.b64decode(m.get("Payload", "")) for m in msgs}


def metric(ip, name):
    st, body = http(ip, "/metrics", timeout=3)
    if st != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            try:
                return float(line.split()[1])
            except ValueError:
                return None
    return None


# --- nodes ---------------------------------------------------------------------------------------

class Node:
    def __init__(self, h, i):
        self.h = h
        self.i = i
        self.name = "n%d" % i
        self.ip = Net.node_ip(i)
        self.ns = h.net.nodes[i - 1]
        self.cfg = os.path.join(h.work, self.name + ".yaml")
        self.proc = None
        self.state = "down"       # down | starting | up | draining
        self.expect_exit = False
        self.starts = 0
        self.crashes = []         # (time, exit status)
        self.fatal = []           # (start, end, kind): kill9 | crash | drain-past-wait
        self.lock = threading.Lock()

    def write_config(self):
        a = self.h.args
        with open(self.cfg, "w") as f:
            f.write(
                "mqtt:\n  port: %d\n  bind: 0.0.0.0\n"
                "api:\n  port: %d\n  bind: 0.0.0.0\n"
                "cluster:\n  node_name: %s\n  bind: %s\n  advertise: %s\n  port: %d\n"
                "  expected_members: %d\n"
                % (MQTT_PORT, API_PORT, self.name, self.ip, self.ip, CLUSTER_PORT, a.nodes))
            if not a.no_key:
                f.write("  config:\n    secret_key: \"%s\"\n" % self.h.secret_key)
            else:
                f.write("  insecure: true\n")  # a cluster without a key must say so
            f.write("discovery:\n  domain: %s\n  nameservers: [\"%s:53\"]\n"
                    "shutdown:\n  grace_period: %d\n  session_wait: %d\n"
                    % (DOMAIN, ROUTER_IP, GRACE_MS, SESSION_WAIT_MS))

    def start(self):
        self.write_config()
        logf = open(os.path.join(self.h.work, "%s.log" % self.name), "ab")
        logf.write(("---- start %d at %.1f\n" % (self.starts + 1, now() - T0)).encode())
        logf.flush()
        with self.lock:
            self.expect_exit = False
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, self.h.args.server, "--config", self.cfg],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # a Ctrl-C on the terminal is the harness's, not theirs
            self.state = "starting"
            self.starts += 1
        logf.close()

    def ready(self):
        st, _ = http(self.ip, "/ready", timeout=2)
        return st == 200

    def wait_ready(self, timeout=30.0):
        end = now() + timeout
        while now() < end:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.ready():
                self.state = "up"
                return True
            time.sleep(0.2)
        return False

    def signal(self, sig):
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.expect_exit = True
                os.kill(self.proc.pid, sig)

    def kill9(self):
        t = now()
        self.state = "down"
        self.signal(signal.SIGKILL)
        self.wait_exit(10)
        self.fatal.append((t, now(), "kill9"))

    def wait_exit(self, timeout):
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def check_crash(self):
        """Called by the monitor: an exit nobody asked for is a crash."""
        with self.lock:
            if self.proc is None or self.expect_exit:
                return False
            rc = self.proc.poll()
            if rc is None:
                return False
            t = now()
            self.crashes.append((t, rc))
            self.fatal.append((t - 1.0, t, "crash"))
            self.state = "down"
            self.expect_exit = True
            return True

    def rss_kib(self):
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def stop(self):
        """End of run: SIGKILL by pid (the run is over; nothing is judged any more)."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.expect_exit = True
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.wait_exit(10)

    def fatal_between(self, a, b):
        for s, e, _ in self.fatal:
            if s <= b and e >= a:
                return True
        return False


# --- MQTT clients --------------------------------------------------------------------------------

mqtt = None          # paho.mqtt.client, imported in main()
Properties = None
PacketTypes = None


def new_client(cid, v5, clean):
    if v5:
        c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(client_id=cid, clean_session=clean, protocol=mqtt.MQTTv311)
    c.max_queued_messages_set(0)
    return c


def mqtt_connect(c, ip, v5, clean, expiry):
    """Starts the connect; raises OSError when the TCP connect fails."""
    if v5:
        props = Properties(PacketTypes.CONNECT)
        if expiry:
            props.SessionExpiryInterval = expiry
        c.connect(ip, MQTT_PORT, keepalive=KEEPALIVE, clean_start=clean, properties=props)
    else:
        c.connect(ip, MQTT_PORT, keepalive=KEEPALIVE)


def rc_value(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


class Conn:
    """One client connection: the node, when CONNACK came, session present, when it ended."""
    __slots__ = ("no", "node", "t", "present", "t_end")

    def __init__(self, no, node, t, present):
        self.no, self.node, self.t, self.present, self.t_end = no, node, t, present, None


class Publisher(threading.Thread):
    """Publishes numbered messages on chaos/m/<idx> at a fixed rate, QoS 1 or 2, a clean
    session; after a drop it reconnects to a random live node and re-sends what was not
    acknowledged (those copies are counted as sent twice)."""

    def __init__(self, h, idx, rate, window=20):
        super().__init__(daemon=True, name="pub%d" % idx)
        self.h, self.idx = h, idx
        self.topic = "chaos/m/%d" % idx
        self.qos = 1 if idx % 2 == 0 else 2
        self.v5 = (idx // 2) % 2 == 0
        self.interval = 1.0 / rate
        self.window = window
        self.cid = "chaos-pub-%d" % idx
        # per seq: [t_send (last send), t_ack, ack node, ack conn no, sends]
        self.msgs = []
        self.unacked = set()
        self.conns = []
        self.stop = threading.Event()
        self.pad = b"x" * max(0, h.args.payload - 24)

    def run(self):
        try:
            self._run()
        except Exception:
            self.h.harness_error("publisher %d: %s" % (self.idx, traceback.format_exc()))

    def _run(self):
        next_due = now()
        while not self.stop.is_set():
            node = self.h.pick_node()
            if node is None:
                time.sleep(0.2)
                continue
            st = {"ok": None, "lost": False, "inflight": {}}
            c = new_client(self.cid, self.v5, True)
            c.max_inflight_messages_set(self.window)

            def on_connect(cl, ud, flags, rc, props=None, st=st):
                st["ok"] = rc_value(rc) == 0

            def on_disconnect(cl, ud, rc, props=None, st=st):
                st["lost"] = True

            def on_publish(cl, ud, mid, st=st, node=node):
                seq = st["inflight"].pop(mid, None)
                if seq is not None:
                    m = self.msgs[seq]
                    if m[1] is None:
                        m[1] = now()
                        m[2] = node.i
                        m[3] = st["no"]
                        self.unacked.discard(seq)

            c.on_connect, c.on_disconnect, c.on_publish = on_connect, on_disconnect, on_publish
            try:
                mqtt_connect(c, node.ip, self.v5, True, 0)
            except (OSError, ValueError):
                time.sleep(0.2 + random.random() * 0.3)
                continue
            end = now() + 5
            while st["ok"] is None and now() < end and not self.stop.is_set():
                if c.loop(0.05) != 0:
                    break
            if not st["ok"]:
                c._sock_close()
                time.sleep(0.2 + random.random() * 0.3)
                continue
            st["no"] = len(self.conns) + 1
            self.conns.append(Conn(st["no"], node.i, now(), 0))
            resend = sorted(self.unacked)
            while not self.stop.is_set() and not st["lost"]:
                t = now()
                while resend and len(st["inflight"]) < self.window:
                    if not self._send(c, st, resend.pop(0), node):
                        break
                while not resend and t >= next_due and len(st["inflight"]) < self.window:
                    seq = len(self.msgs)
                    self.msgs.append([None, None, None, None, 0])
                    self.unacked.add(seq)
                    next_due += self.interval
                    if not self._send(c, st, seq, node):
                        break
                if next_due < t - 1.0:
                    next_due = t  # no burst after a stall
                wait = max(0.001, min(0.05, next_due - now()))
                if c.loop(wait) != 0:
                    break
            self.conns[-1].t_end = now()
            if self.stop.is_set() and not st["lost"]:
                # The last acknowledgements, then a clean DISCONNECT.
                end = now() + 5
                while st["inflight"] and now() < end and c.loop(0.05) == 0:
                    pass
                c.disconnect()
                c.loop(0.1)
            c._sock_close()
            if not self.stop.is_set():
                time.sleep(random.random() * 0.3)

    def _send(self, c, st, seq, node):
        payload = b"%d %d %d " % (self.idx, st["no"], seq) + self.pad
        # The send time is taken before the write: a thread switch after it (40 client threads
        # share the interpreter) would date a message written before a subscriber's SUBACK
        # after it, and the message would be expected of a subscription it preceded.
        t = now()
        info = c.publish(self.topic, payload, self.qos)
        if info.rc != 0:
            st["lost"] = True
            return False
        m = self.msgs[seq]
        m[0] = t
        m[4] += 1
        st["inflight"][info.mid] = seq
        return True


class Subscriber(threading.Thread):
    """A persistent session (v5: clean start 0, expiry 300 s; v3.1.1: clean session 0)
    subscribed to some publishers' topics at QoS 2. It records every connection with the node
    and session present, and every message with the connection it came on and its DUP flag.
    After a drop it reconnects to a random live node; a takeover request makes it connect to
    the given node while its old connection is still open."""

    def __init__(self, h, idx, pubs):
        super().__init__(daemon=True, name="sub%d" % idx)
        self.h, self.idx = h, idx
        self.pubs = pubs
        self.v5 = idx % 2 == 0
        self.cid = "chaos-sub-%d" % idx
        self.conns = []
        self.lineages = []     # [t_subscribed, t_ended or None, conn no of the start]
        self.first = {p: {} for p in pubs}    # p -> seq -> (t, conn, dup)
        self.order = {p: [] for p in pubs}    # p -> seqs in order of first arrival
        self.dups = []                         # (p, seq, t, conn, dup flag)
        self.session_events = []               # (t, kind, node): "lost" session present 0
        self.takeover = None                   # node index requested
        self.takeover_done = threading.Event()
        self.takeover_result = None
        self.stop = threading.Event()
        self.last_rx = 0.0
        self.ready = threading.Event()

    def run(self):
        try:
            self._run()
        except Exception:
            self.h.harness_error("subscriber %d: %s" % (self.idx, traceback.format_exc()))

    def _make(self, conn_no_ref, prev):
        c = new_client(self.cid, self.v5, False)
        if prev is not None:
            # QoS 2 deliveries whose PUBREL is still to come move with the session.
            c._in_messages = prev._in_messages

        def on_message(cl, ud, msg):
            try:
                p, _, seq = msg.payload.split(b" ", 3)[:3]
                p, seq = int(p), int(seq)
            except ValueError:
                return
            t = now()
            self.last_rx = t
            f = self.first.get(p)
            if f is None:
                return
            if seq in f:
                self.dups.append((p, seq, t, conn_no_ref[0], bool(msg.dup)))
            else:
                f[seq] = (t, conn_no_ref[0], bool(msg.dup))
                self.order[p].append(seq)

        c.on_message = on_message
        return c

    def _connect(self, node, prev):
        """(client, session present) once CONNACK came, else (None, None)."""
        conn_no_ref = [len(self.conns) + 1]
        c = self._make(conn_no_ref, prev)
        st = {"ok": None, "present": 0}

        def on_connect(cl, ud, flags, rc, props=None):
            st["ok"] = rc_value(rc) == 0
            st["present"] = flags.get("session present", 0)
            if prev is not None:
                for k, v in prev._in_messages.items():
                    cl._in_messages.setdefault(k, v)

        c.on_connect = on_connect
        try:
            mqtt_connect(c, node.ip, self.v5, False, SESSION_EXPIRY)
        except (OSError, ValueError):
            return None, None
        end = now() + 8
        while st["ok"] is None and now() < end and not self.stop.is_set():
            if c.loop(0.05) != 0:
                break
            if prev is not None and prev._sock is not None:
                prev.loop(0)  # the old connection of a takeover, until the server closes it
        if not st["ok"]:
            c._sock_close()
            return None, None
        t = now()
        self.conns.append(Conn(conn_no_ref[0], node.i, t, st["present"]))
        return c, st["present"]

    def _subscribe(self, c):
        st = {"done": False, "lost": False}

        def on_subscribe(cl, ud, mid, granted, props=None):
            st["done"] = True

        def on_disconnect(cl, ud, rc, props=None):
            st["lost"] = True

        c.on_subscribe, c.on_disconnect = on_subscribe, on_disconnect
        rc, _ = c.subscribe([("chaos/m/%d" % p, 2) for p in self.pubs])
        if rc != 0:
            return False
        end = now() + 10
        while not st["done"] and not st["lost"] and now() < end:
            if c.loop(0.05) != 0:
                return False
        return st["done"]

    def _run(self):
        c = None       # the open connection
        prev = None    # the last closed one (its QoS 2 state moves to the next)
        while not self.stop.is_set():
            if c is None or self.takeover is not None:
                target = self.takeover
                node = self.h.nodes[target - 1] if target is not None else self.h.pick_node()
                if node is None:
                    time.sleep(0.2)
                    continue
                nc, present = self._connect(node, c if c is not None else prev)
                if target is not None:
                    self.takeover_result = (node.i, present)
                    self.takeover = None
                    self.takeover_done.set()
                if nc is None:
                    if c is None:
                        time.sleep(0.2 + random.random() * 0.3)
                        continue
                    # a failed takeover: the old connection goes on
                else:
                    if c is not None:
                        # A takeover: the server closed the old connection (or will).
                        c._sock_close()
                        self.conns[-2].t_end = now()
                    c, prev = nc, None
                    active = bool(self.lineages) and self.lineages[-1][1] is None
                    if present == 0 and active:
                        self.lineages[-1][1] = now()
                        self.session_events.append((now(), len(self.conns) - 1,
                                                    self.lineages[-1][2]))
                    if present == 0 or not active:
                        # (a session present without a lineage is one whose SUBSCRIBE failed)
                        if not self._subscribe(c):
                            self.conns[-1].t_end = now()
                            c._sock_close()
                            prev, c = c, None
                            continue
                        self.lineages.append([now(), None, len(self.conns) - 1])
                    self.ready.set()
            lost = {"v": False}

            def on_disconnect(cl, ud, rc, props=None, lost=lost):
                lost["v"] = True

            c.on_disconnect = on_disconnect
            while not self.stop.is_set() and not lost["v"] and self.takeover is None:
                if c.loop(0.1) != 0:
                    lost["v"] = True
            if self.stop.is_set() or (not lost["v"] and c._sock is not None):
                if self.stop.is_set():
                    break
                continue  # a takeover: connect elsewhere with this connection still open
            self.conns[-1].t_end = now()
            c._sock_close()
            prev, c = c, None
            time.sleep(random.random() * 0.3)
        if c is not None:
            # A clean DISCONNECT; the session stays (expiry 300 s), nothing more is judged.
            try:
                c.disconnect()
                c.loop(0.1)
            except Exception:
                pass
            c._sock_close()
            if self.conns and self.conns[-1].t_end is None:
                self.conns[-1].t_end = now()


class RetainedWriter(threading.Thread):
    """Updates and deletes entries of the preloaded retained set (QoS 1, v5), never touching a
    topic again within 3 s; every operation is re-sent until acknowledged."""

    def __init__(self, h, n_topics, rate):
        super().__init__(daemon=True, name="retained")
        self.h = h
        self.n = n_topics
        self.interval = 1.0 / rate
        self.ops = []          # [topic, value or None, t_send, t_ack, node, sends]
        self.last_touch = {}
        self.unacked = []
        self.stop = threading.Event()
        self.rng = random.Random()

    def run(self):
        try:
            self._run()
        except Exception:
            self.h.harness_error("retained writer: %s" % traceback.format_exc())

    def _run(self):
        k = 0
        while not self.stop.is_set():
            node = self.h.pick_node()
            if node is None:
                time.sleep(0.2)
                continue
            st = {"ok": None, "lost": False, "inflight": {}}
            c = new_client("chaos-retained", True, True)

            def on_connect(cl, ud, flags, rc, props=None, st=st):
                st["ok"] = rc_value(rc) == 0

            def on_disconnect(cl, ud, rc, props=None, st=st):
                st["lost"] = True

            def on_publish(cl, ud, mid, st=st, node=node):
                i = st["inflight"].pop(mid, None)
                if i is not None and self.ops[i][3] is None:
                    self.ops[i][3] = now()
                    self.ops[i][4] = node.i
                    self.unacked.remove(i)

            c.on_connect, c.on_disconnect, c.on_publish = on_connect, on_disconnect, on_publish
            try:
                mqtt_connect(c, node.ip, True, True, 0)
            except (OSError, ValueError):
                time.sleep(0.3)
                continue
            end = now() + 5
            while st["ok"] is None and now() < end:
                if c.loop(0.05) != 0:
                    break
            if not st["ok"]:
                c._sock_close()
                time.sleep(0.3)
                continue
            for i in list(self.unacked):
                self._send(c, st, i)
            next_due = now()
            while not self.stop.is_set() and not st["lost"]:
                if now() >= next_due and len(st["inflight"]) < 10:
                    next_due += self.interval
                    for _ in range(20):
                        t = self.rng.randrange(self.n)
                        if now() - self.last_touch.get(t, -10) > 3.0:
                            break
                    else:
                        continue
                    k += 1
                    value = None if self.rng.random() < 0.3 else b"w%d" % k
                    self.last_touch[t] = now()
                    self.ops.append(["chaos/r/%d" % t, value, None, None, None, 0])
                    self.unacked.append(len(self.ops) - 1)
                    self._send(c, st, len(self.ops) - 1)
                if c.loop(0.02) != 0:
                    break
            if self.stop.is_set():
                end = now() + 5
                while st["inflight"] and now() < end and c.loop(0.05) == 0:
                    pass
                c.disconnect()
                c.loop(0.1)
            c._sock_close()

    def _send(self, c, st, i):
        op = self.ops[i]
        info = c.publish(op[0], op[1] or b"", 1, retain=True)
        if info.rc == 0:
            op[2] = now()
            op[5] += 1
            st["inflight"][info.mid] = i


def blocking_client(cid, node, v5=True, clean=True, expiry=0, timeout=8):
    """A connected client driven by the caller's loop() calls, and session present."""
    c = new_client(cid, v5, clean)
    st = {"ok": None, "present": 0}

    def on_connect(cl, ud, flags, rc, props=None):
        st["ok"] = rc_value(rc) == 0
        st["present"] = flags.get("session present", 0)

    c.on_connect = on_connect
    mqtt_connect(c, node.ip, v5, clean, expiry)
    end = now() + timeout
    while st["ok"] is None and now() < end:
        if c.loop(0.05) != 0:
            break
    if not st["ok"]:
        c._sock_close()
        raise OSError("no CONNACK from %s" % node.name)
    return c, st["present"]


def publish_all(c, items, qos, retain=False, timeout=60, window=200):
    """Publishes (topic, payload) items keeping `window` in flight; the number acknowledged."""
    acked = [0]
    inflight = set()

    def on_publish(cl, ud, mid):
        if mid in inflight:
            inflight.discard(mid)
            acked[0] += 1

    c.on_publish = on_publish
    c.max_inflight_messages_set(window)
    end = now() + timeout
    i = 0
    while (i < len(items) or inflight) and now() < end:
        while i < len(items) and len(inflight) < window:
            info = c.publish(items[i][0], items[i][1], qos, retain=retain)
            if info.rc != 0:
                return acked[0]
            inflight.add(info.mid)
            i += 1
        if c.loop(0.02) != 0:
            break
    return acked[0]


# --- the schedule --------------------------------------------------------------------------------

def make_schedule(seed, classes, n_nodes, count):
    """The faults for a seed: classes in shuffled rounds (each class once per round), each with
    its node and parameters. Independent of timing: the same seed gives the same list."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        round_ = list(classes)
        rng.shuffle(round_)
        for cls in round_:
            f = {"class": cls, "node": rng.randint(1, n_nodes), "gap": round(rng.uniform(2, 5), 1)}
            if cls == "kill9":
                f["down"] = round(rng.uniform(1, 5), 1)
            elif cls == "drain":
                f["down"] = round(rng.uniform(1, 3), 1)
            elif cls in ("partition", "oneway"):
                f["seconds"] = round(rng.uniform(1, 20), 1)
                if cls == "oneway":
                    f["direction"] = rng.choice(["in", "out"])
            elif cls == "loss":
                f["seconds"] = round(rng.uniform(5, 20), 1)
                f["percent"] = rng.randint(5, 20)
            elif cls == "takeover":
                f["subscriber"] = rng.randrange(1 << 16)  # modulo the subscriber count
                f["to"] = rng.randint(1, n_nodes)
            elif cls == "burst":
                f["filters"] = rng.randint(500, 2000)
                f["probe_node"] = rng.randint(1, n_nodes)
            elif cls == "bigsession":
                f["to"] = rng.randint(1, n_nodes)
                f["publish_node"] = rng.randint(1, n_nodes)
            out.append(f)
            if len(out) >= count:
                break
    return out


def describe(f):
    keys = [k for k in f if k not in ("class", "gap")]
    return "%s %s" % (f["class"], " ".join("%s=%s" % (k, f[k]) for k in keys))


# --- the harness ---------------------------------------------------------------------------------

class Event:
    """One fault as it ran."""

    def __init__(self, spec, start):
        self.spec = spec
        self.cls = spec["class"]
        self.start = start
        self.end = None
        self.notes = []
        # judged outcomes measured by the fault itself (burst, joiner, bigsession, takeover)
        self.lost_judged = 0
        self.lost_other = 0
        self.expected = 0
        self.sessions_lost = 0
        self.joiner_missing = 0
        self.failed = False


class Harness:
    def __init__(self, args):
        self.args = args
        self.net = Net(args.nodes)
        self.work = tempfile.mkdtemp(prefix="brokerha-chaos-")
        self.secret_key = "".join(random.SystemRandom().choice("abcdefghijkmnpqrstuvwxyz23456789")
                                  for _ in range(32))
        self.nodes = []
        self.dns = None
        self.pubs, self.subs = [], []
        self.writer = None
        self.events = []
        self.errors = []
        self.retained_expected = {}   # topic -> value (preload)
        self.retained_result = {}
        self.stop_faults = threading.Event()
        self.fault_thread = None
        self.monitor_stop = threading.Event()
        self.schedule = []
        self.t_load = None

    def harness_error(self, msg):
        self.errors.append(msg)
        log("HARNESS ERROR: " + msg)

    # node choice for clients: any node the harness has not taken down
    def pick_node(self):
        live = [n for n in self.nodes if n.state == "up"]
        return random.choice(live) if live else None

    # --- bring-up --------------------------------------------------------------------------------
    def setup(self):
        a = self.args
        if not os.access(a.server, os.X_OK):
            raise SetupError("no server binary at %s (build it: cmake --preset ci && cmake --build "
                             "--preset ci --target brokerha-server; or give --server)" % a.server)
        self.net.setup()
        self.net.enter_router()
        zone = {DOMAIN: {"SRV": [{"priority": 0, "weight": 0, "port": CLUSTER_PORT,
                                  "target": "n%d.chaos.test" % i}
                                 for i in range(1, a.nodes + 1)]}}
        for i in range(1, a.nodes + 1):
            zone["n%d.chaos.test" % i] = {"A": [Net.node_ip(i)]}
        with open(os.path.join(self.work, "zone.json"), "w") as f:
            json.dump(zone, f)
        dlog = open(os.path.join(self.work, "dns.log"), "wb")
        self.dns = subprocess.Popen(
            ["/usr/bin/python3", DNS_SERVER, "--bind", ROUTER_IP, "--port", "53",
             "--zone", os.path.join(self.work, "zone.json")],
            stdout=dlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        dlog.close()
        self.nodes = [Node(self, i) for i in range(1, a.nodes + 1)]
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            if not n.wait_ready(30):
                raise SetupError("%s did not become ready (log: %s/%s.log)"
                                 % (n.name, self.work, n.name))
        end = now() + 30
        while now() < end:
            if all(self.alive_members(n) == a.nodes for n in self.nodes):
                break
            time.sleep(0.3)
        else:
            raise SetupError("the nodes did not all see each other within 30 s")
        log("cluster up: %d nodes, %s, server %s" % (
            a.nodes, "not keyed" if a.no_key else "keyed", a.server))
        threading.Thread(target=self.monitor, daemon=True, name="monitor").start()

    def alive_members(self, n):
        st, body = http(n.ip, "/api/discovery/members", timeout=2)
        if st != 200:
            return 0
        try:
            return sum(1 for m in json.loads(body) if m.get("State") == 0)
        except ValueError:
            return 0

    def monitor(self):
        """Nodes that exit on their own are crashes; they are started again."""
        while not self.monitor_stop.wait(0.2):
            for n in self.nodes:
                if n.check_crash():
                    log("CRASH: %s exited on its own (status %s); restarting it"
                        % (n.name, n.crashes[-1][1]))
                    n.start()
                    threading.Thread(target=n.wait_ready, args=(30,), daemon=True).start()

    def preload(self):
        """The retained set chaos/r/0..N-1, published over all nodes at once."""
        a = self.args
        n = a.retained
        if n == 0:
            return
        t = now()
        shares = [[] for _ in self.nodes]
        for i in range(n):
            topic = "chaos/r/%d" % i
            value = (b"v0-%d " % i).ljust(a.retained_payload, b"r")
            shares[i % len(self.nodes)].append((topic, value))
            self.retained_expected[topic] = value
        results = [0] * len(self.nodes)

        def one(k):
            c, _ = blocking_client("chaos-preload-%d" % k, self.nodes[k])
            results[k] = publish_all(c, shares[k], 1, retain=True, timeout=120, window=500)
            c.disconnect()
            c.loop(0.1)
            c._sock_close()

        ts = [threading.Thread(target=one, args=(k,)) for k in range(len(self.nodes))]
        for x in ts:
            x.start()
        for x in ts:
            x.join()
        if sum(results) != n:
            raise SetupError("retained preload: %d of %d acknowledged" % (sum(results), n))
        # Every node holds the whole set before the load starts.
        end = now() + 60
        counts = []
        while now() < end:
            counts = [metric(x.ip, "broker_retained_messages") or 0 for x in self.nodes]
            if all(c >= n for c in counts):
                counts = [len(retained_set(x.ip) or {}) for x in self.nodes]
                if all(c == n for c in counts):
                    break
            time.sleep(1)
        else:
            raise SetupError("retained preload: the nodes hold %s of %d" % (counts, n))
        log("retained set of %d entries on every node in %.1f s" % (n, now() - t))

    def start_load(self):
        a = self.args
        rate = a.rate / a.publishers
        self.pubs = [Publisher(self, p, rate) for p in range(a.publishers)]
        for s in range(a.subscribers):
            pubs = sorted({(s + k) % a.publishers for k in range(a.fanout)})
            self.subs.append(Subscriber(self, s, pubs))
        for s in self.subs:
            s.start()
        for s in self.subs:
            if not s.ready.wait(20):
                raise SetupError("subscriber %d could not subscribe" % s.idx)
        self.t_load = now()
        for p in self.pubs:
            p.start()
        if a.retained > 0 and a.retained_rate > 0:
            self.writer = RetainedWriter(self, a.retained, a.retained_rate)
            self.writer.start()
        log("load: %d publishers (%.0f msg/s in all), %d persistent subscribers, fan-out %d"
            % (a.publishers, a.rate, a.subscribers, a.fanout))

    # --- faults ----------------------------------------------------------------------------------
    def run_faults(self, until):
        try:
            for spec in self.schedule:
                if self.stop_faults.is_set():
                    break
                if self.stop_faults.wait(spec["gap"]):
                    break
                est = {"partition": spec.get("seconds", 0) + 8,
                       "oneway": spec.get("seconds", 0) + 8,
                       "loss": spec.get("seconds", 0) + 8, "joiner": 25, "bigsession": 20,
                       "drain": spec.get("down", 0) + 12, "kill9": spec.get("down", 0) + 5,
                       "burst": 12, "takeover": 4}[spec["class"]]
                if now() + est > until:
                    log("faults: no time left for the next (%s); %d run" % (
                        spec["class"], len(self.events)))
                    break
                ev = Event(spec, now())
                self.events.append(ev)
                log("fault %d: %s" % (len(self.events), describe(spec)))
                try:
                    getattr(self, "fault_" + spec["class"])(ev, spec)
                finally:
                    ev.end = now()
                self.recover(ev)
                log("fault %d done in %.1f s%s" % (len(self.events), ev.end - ev.start,
                                                   (": " + "; ".join(ev.notes)) if ev.notes else ""))
        except Exception:
            self.harness_error("faults: %s" % traceback.format_exc())

    def recover(self, ev):
        """Every node up and ready again before the next fault."""
        for n in self.nodes:
            if n.state != "up" and (n.proc is None or n.proc.poll() is not None):
                n.start()
            if n.state != "up" and not n.wait_ready(30):
                ev.notes.append("%s not ready 30 s after the fault" % n.name)

    def node(self, spec):
        return self.nodes[spec["node"] - 1]

    def restart(self, n, ev):
        n.start()
        if not n.wait_ready(30):
            ev.notes.append("%s not ready 30 s after its restart" % n.name)

    def fault_kill9(self, ev, spec):
        n = self.node(spec)
        n.kill9()
        time.sleep(spec["down"])
        self.restart(n, ev)

    def drain(self, n, ev):
        t = now()
        n.state = "draining"
        n.signal(signal.SIGTERM)
        if not n.wait_exit(GRACE_MS / 1000 + 5):
            ev.notes.append("%s still running %d s after SIGTERM: killed" % (
                n.name, GRACE_MS / 1000 + 5))
            n.signal(signal.SIGKILL)
            n.wait_exit(10)
        took = now() - t
        n.state = "down"
        past = took >= SESSION_WAIT_MS / 1000.0
        if past:
            n.fatal.append((t, now(), "drain-past-wait"))
        ev.notes.append("%s drained in %.1f s%s" % (n.name, took, " (past the session wait)"
                                                     if past else ""))

    def fault_drain(self, ev, spec):
        n = self.node(spec)
        self.drain(n, ev)
        time.sleep(spec["down"])
        self.restart(n, ev)

    def fault_partition(self, ev, spec):
        self._net_fault(ev, spec, lambda i: self.net.partition(i, self.args.nodes, "both"))

    def fault_oneway(self, ev, spec):
        self._net_fault(ev, spec,
                        lambda i: self.net.partition(i, self.args.nodes, spec["direction"]))

    def fault_loss(self, ev, spec):
        self._net_fault(ev, spec, lambda i: self.net.loss(i, spec["percent"]))

    def _net_fault(self, ev, spec, apply):
        i = spec["node"]
        apply(i)
        try:
            self.stop_faults.wait(spec["seconds"])
        finally:
            self.net.heal(i)
        # Let the cluster notice the heal (membership, links) before the next fault.
        end = now() + 20
        while now() < end:
            if all(self.alive_members(n) == self.args.nodes for n in self.nodes):
                break
            time.sleep(0.5)
        else:
            ev.notes.append("membership not whole 20 s after the heal")

    def fault_takeover(self, ev, spec):
        s = self.subs[spec["subscriber"] % len(self.subs)]
        holder = s.conns[-1].node if s.conns else None
        to = spec["to"]
        if to == holder:
            to = to % self.args.nodes + 1
        s.takeover_done.clear()
        s.takeover = to
        if not s.takeover_done.wait(15):
            ev.notes.append("sub%d: takeover did not complete in 15 s" % s.idx)
            return
        node, present = s.takeover_result
        ev.notes.append("sub%d n%s -> n%d, session present %s" % (s.idx, holder, node, present))

    def fault_burst(self, ev, spec):
        n = self.node(spec)
        probe = self.nodes[spec["probe_node"] - 1]
        if probe is n:
            probe = self.nodes[n.i % len(self.nodes)]
        k = len(self.events)
        count = spec["filters"]
        topics = ["chaos/burst/%d/%d" % (k, j) for j in range(count)]
        got = set()
        c, _ = blocking_client("chaos-burst-%d" % k, n)

        def on_message(cl, ud, msg):
            got.add(msg.topic)

        c.on_message = on_message
        pending = set()

        def on_subscribe(cl, ud, mid, granted, props=None):
            pending.discard(mid)

        c.on_subscribe = on_subscribe
        for j in range(0, count, 50):
            rc, mid = c.subscribe([(t, 1) for t in topics[j:j + 50]])
            pending.add(mid)
        end = now() + 15
        while pending and now() < end:
            if c.loop(0.05) != 0:
                break
        ev.expected = count
        if pending:
            ev.notes.append("%d SUBACKs missing after 15 s" % len(pending))
            ev.lost_judged += count  # nothing can be counted on
            c._sock_close()
            return
        p, _ = blocking_client("chaos-burst-probe-%d" % k, probe)
        acked = publish_all(p, [(t, b"probe") for t in topics], 1, timeout=20)
        p.disconnect()
        p.loop(0.1)
        p._sock_close()
        end = now() + 10
        while len(got) < acked and now() < end:
            if c.loop(0.05) != 0:
                break
        missing = acked - len(got & set(topics))
        ev.lost_judged += max(0, missing)
        ev.notes.append("%d filters on %s, %d probes from %s acknowledged, %d missing"
                        % (count, n.name, acked, probe.name, missing))
        c.disconnect()
        c.loop(0.1)
        c._sock_close()

    def fault_joiner(self, ev, spec):
        n = self.node(spec)
        self.drain(n, ev)
        t = now()
        self.restart(n, ev)
        ref = self.nodes[n.i % len(self.nodes)]
        want = None
        end = now() + self.args.joiner_timeout
        have = None
        while now() < end:
            want = metric(ref.ip, "broker_retained_messages")
            have = metric(n.ip, "broker_retained_messages")
            if want is not None and have is not None and have >= want:
                break
            time.sleep(0.5)
        took = now() - t
        # The reference first, then the joiner: an entry the reference holds was written
        # before the joiner's set was read. The retained writer keeps setting and deleting
        # entries meanwhile, and a live write reaches each node on its own path (judged by the
        # end-of-run retained check), so an entry counts as missing only if it is still on the
        # reference, still absent on the joiner after a few re-reads, and was not written in
        # the last few seconds.
        read_at = now()
        theirs = retained_set(ref.ip)
        mine = retained_set(n.ip)
        if mine is None or theirs is None:
            ev.notes.append("retained sets could not be read")
            ev.joiner_missing = len(self.retained_expected)
            return
        have, want = len(mine), len(theirs)
        missing = set(theirs) - set(mine)
        for _ in range(5):
            if self.writer is not None:
                touched = dict(self.writer.last_touch)
                missing = {m for m in missing
                           if touched.get(int(m.rsplit("/", 1)[1]), -1e9) < read_at - 5.0}
            if not missing:
                break
            time.sleep(1.0)
            theirs = retained_set(ref.ip)
            mine = retained_set(n.ip)
            if mine is None or theirs is None:
                break
            missing = {m for m in missing if m in theirs and m not in mine}
        ev.joiner_missing = len(missing)
        ev.notes.append("%s holds %d of %s's %d retained entries %.1f s after its start%s"
                        % (n.name, have, ref.name, want, took,
                           "" if not missing else "; missing: " + ", ".join(sorted(missing)[:5])))

    def fault_bigsession(self, ev, spec):
        home = self.node(spec)
        to = self.nodes[spec["to"] - 1]
        if to is home:
            to = self.nodes[home.i % len(self.nodes)]
        pubn = self.nodes[spec["publish_node"] - 1]
        k = len(self.events)
        cid = "chaos-big-%d" % k
        topic = "chaos/big/%d" % k
        count, size = self.args.big_messages, self.args.big_payload
        c, _ = blocking_client(cid, home, clean=True, expiry=SESSION_EXPIRY)
        done = {"v": False}
        c.on_subscribe = lambda cl, ud, mid, granted, props=None: done.__setitem__("v", True)
        c.subscribe(topic, 1)
        end = now() + 10
        while not done["v"] and now() < end and c.loop(0.05) == 0:
            pass
        c.disconnect()  # the session stays on home (expiry 300 s), offline
        c.loop(0.1)
        c._sock_close()
        p, _ = blocking_client(cid + "-pub", pubn)
        items = [(topic, b"%d " % j + b"b" * size) for j in range(count)]
        acked = publish_all(p, items, 1, timeout=60, window=100)
        p.disconnect()
        p.loop(0.1)
        p._sock_close()
        time.sleep(1.0)  # the messages reach home's session over the link
        got = set()
        c, present = blocking_client(cid, to, clean=False, expiry=SESSION_EXPIRY, timeout=15)

        def on_message(cl, ud, msg):
            got.add(int(msg.payload.split(b" ", 1)[0]))

        c.on_message = on_message
        last = now()
        end = now() + 30
        while now() < end and len(got) < acked and now() - last < 5:
            before = len(got)
            if c.loop(0.1) != 0:
                break
            if len(got) != before:
                last = now()
        ev.expected = acked
        lost = acked - len(got)
        fatal = any(x.fatal_between(ev.start, now()) for x in (home, to, pubn))
        if fatal:
            ev.lost_other += lost
        else:
            ev.lost_judged += lost
            if present == 0:
                ev.sessions_lost += 1
        ev.notes.append("%d x %d B queued on %s, resumed on %s: session present %d, %d of %d "
                        "received" % (acked, size, home.name, to.name, present, len(got), acked))
        # End the session so that its queue does not stay in memory.
        c.disconnect()
        c.loop(0.1)
        c._sock_close()
        try:
            c2, _ = blocking_client(cid, to, clean=True)
            c2.disconnect()
            c2.loop(0.1)
            c2._sock_close()
        except OSError:
            pass

    # --- the end ---------------------------------------------------------------------------------
    def finish_load(self):
        for p in self.pubs:
            p.stop.set()
        if self.writer:
            self.writer.stop.set()
        for p in self.pubs:
            p.join(10)
        if self.writer:
            self.writer.join(10)
        # Deliveries still on their way: wait until every expected message arrived or nothing
        # arrived for a while.
        end = now() + self.args.drain_wait
        while now() < end:
            quiet = all(now() - s.last_rx > 3.0 for s in self.subs)
            if quiet:
                break
            time.sleep(0.5)
        for s in self.subs:
            s.stop.set()
        for s in self.subs:
            s.join(10)

    def check_retained(self, deadline):
        """Every node holds the same chaos/r/# set (polled until `deadline`), and it is what
        was acknowledged last for each topic, deletes included."""
        sets = None
        while True:
            sets = [retained_set(n.ip) for n in self.nodes]
            if all(x is not None for x in sets) and all(x == sets[0] for x in sets[1:]):
                break
            if now() >= deadline:
                break
            time.sleep(2)
        r = self.retained_result
        r["read"] = all(x is not None for x in sets)
        if not r["read"]:
            r["disagree"] = -1
            return
        topics = set().union(*[set(x) for x in sets])
        r["disagree"] = sum(1 for t in topics if len({x.get(t) for x in sets}) > 1)
        expected = dict(self.retained_expected)
        uncertain = set()
        deletes = set()
        if self.writer:
            for topic, value, t_send, t_ack, node, sends in self.writer.ops:
                if t_ack is None:
                    uncertain.add(topic)
                    continue
                n = self.nodes[node - 1]
                if n.fatal_between(t_send, t_ack + 5.0):
                    uncertain.add(topic)  # acked by a node that died before it could pass it on
                expected[topic] = value
                if value is None:
                    deletes.add(topic)
                else:
                    deletes.discard(topic)
        wrong = resurrected = lost_other = 0
        for topic in set(expected) | topics:
            want = expected.get(topic)
            haves = [x.get(topic) for x in sets]
            if all(have == want for have in haves):
                continue
            if topic in uncertain:
                lost_other += 1
            elif topic in deletes and any(have is not None for have in haves):
                resurrected += 1
            else:
                wrong += 1
        r["wrong"] = wrong
        r["resurrected"] = resurrected
        r["uncertain"] = lost_other
        r["entries"] = [len(x) for x in sets]
        r["ops"] = len(self.writer.ops) if self.writer else 0


# --- analysis ------------------------------------------------------------------------------------

def attribute(events, a, b):
    """The fault a problem in [a, b] is put on (its index, -1 for none). The fault running at
    a (a message lost was sent during it), else the latest fault that started by b if its end,
    plus up to 10 s for the cluster to settle (at most until the next fault), is not before a.
    Faults never overlap, so no other fault can qualify."""
    k = bisect.bisect_right(ATTR_STARTS, a) - 1
    if k >= 0 and events[k].end >= a:
        return k
    k = bisect.bisect_right(ATTR_STARTS, b) - 1
    if k < 0:
        return -1
    ev = events[k]
    nxt = events[k + 1].start if k + 1 < len(events) else float("inf")
    tail = min(10.0, max(0.0, nxt - ev.end))
    return k if ev.end + tail >= a else -1


ATTR_STARTS = []


def holder_segments(conns, t_final):
    """[(node, from, to)] for a subscriber: connection k's node holds the session from its
    CONNACK until the next CONNACK."""
    segs = []
    for k, c in enumerate(conns):
        to = conns[k + 1].t if k + 1 < len(conns) else t_final
        segs.append((c.node, c.t, to))
    return segs


def analyse(h, t_final):
    """The table's rows (per fault class), the total, examples of judged problems, and the
    judged problems per fault (index -> Counter)."""
    ATTR_STARTS[:] = [ev.start for ev in h.events]
    rows = collections.OrderedDict()
    for cls in ["none"] + CLASS_NAMES:
        rows[cls] = collections.Counter()
    per_fault = collections.defaultdict(collections.Counter)
    judged = {c[0] for c in COLUMNS if c[3]}

    def bump(k, key, n=1):
        rows[h.events[k].cls if k >= 0 else "none"][key] += n
        if key in judged and k >= 0 and n:
            per_fault[k][key] += n

    for k, ev in enumerate(h.events):
        bump(k, "faults")
        bump(k, "expected", ev.expected)
        bump(k, "lost_judged", ev.lost_judged)
        bump(k, "lost_other", ev.lost_other)
        bump(k, "sessions_lost", ev.sessions_lost)
        bump(k, "joiner_missing", ev.joiner_missing)
    nodes = h.nodes
    pubs = h.pubs
    examples = []
    for s in h.subs:
        segs = holder_segments(s.conns, t_final)
        lineages = s.lineages
        for p in s.pubs:
            pub = pubs[p]
            first = s.first[p]
            # receive times of first arrivals, for "a later message of the same publisher
            # arrived": the loss happened by then
            arrivals = sorted((seq, v[0]) for seq, v in first.items())
            later = {}
            best = float("inf")
            for seq, t in reversed(arrivals):
                best = min(best, t)
                later[seq] = best
            seqs_sorted = [x for x, _ in arrivals]
            for seq, m in enumerate(pub.msgs):
                t_send, t_ack, ack_node = m[0], m[1], m[2]
                if t_ack is None:
                    continue
                # expected only while a lineage of this subscriber was subscribed
                exp = False
                for ls in lineages:
                    if ls[0] <= t_send and (ls[1] is None or ls[1] > t_send):
                        exp = True
                        break
                if not exp:
                    continue
                if seq in first:
                    bump(attribute(h.events, t_send, first[seq][0]), "expected")
                    continue
                k = bisect.bisect_right(seqs_sorted, seq)
                t_res = later[seqs_sorted[k]] if k < len(seqs_sorted) else t_final
                t_res = max(t_res, t_send)
                k = attribute(h.events, t_send, t_res)
                bump(k, "expected")
                excused = nodes[ack_node - 1].fatal_between(t_send, t_res)
                if not excused:
                    for node, a, b in segs:
                        if a <= t_res and b >= t_send and nodes[node - 1].fatal_between(a, b):
                            excused = True
                            break
                if excused:
                    bump(k, "lost_other")
                else:
                    bump(k, "lost_judged")
                    if len(examples) < 10:
                        held = ["n%d from %.1f" % (node, a - T0) for node, a, b in segs
                                if a <= t_res and b >= t_send - 5]
                        examples.append("sub%d missed pub%d seq %d (sent %.2f on n%d, acked "
                                        "%.2f; session on %s)"
                                        % (s.idx, p, seq, t_send - T0, ack_node, t_ack - T0,
                                           ", ".join(held)))
            # duplicates
            for (pp, seq, t, conn, dup) in s.dups:
                if pp != p:
                    continue
                f = first.get(seq)
                allowed = dup or (seq < len(pub.msgs) and pub.msgs[seq][4] > 1) or \
                    (f is not None and f[1] != conn)
                bump(attribute(h.events, t, t), "dups_ok" if allowed else "dup_violations")
            # order: a first arrival overtaken by a later message of the same publisher
            # connection, both sent once
            top = -1
            for seq in s.order[p]:
                if seq < top:
                    m, mt = pub.msgs[seq], pub.msgs[top]
                    if m[4] == 1 and mt[4] == 1 and m[3] is not None and m[3] == mt[3]:
                        bump(attribute(h.events, first[seq][0], first[seq][0]),
                             "order_violations")
                else:
                    top = seq
        # sessions: present 0 where the session should have existed: excused only when a
        # node that held it since the lineage began died (kill -9, crash, drain past its wait)
        for t, j, k0 in s.session_events:
            excused = False
            for k in range(k0, j):
                c = s.conns[k]
                if nodes[c.node - 1].fatal_between(c.t, s.conns[k + 1].t):
                    excused = True
                    break
            dropped = s.conns[j - 1].t_end or s.conns[j - 1].t
            bump(attribute(h.events, dropped, t),
                 "sessions_lost" if not excused else "sessions_lost_other")
            if not excused and len(examples) < 20:
                examples.append("sub%d: session present 0 on n%d at %.1f (held by %s)" % (
                    s.idx, s.conns[j].node, t - T0,
                    ",".join("n%d" % s.conns[k].node for k in range(k0, j))))
    for n in nodes:
        for t, rc in n.crashes:
            bump(attribute(h.events, t, t), "crashes")
    total = collections.Counter()
    for r in rows.values():
        total.update(r)
    return rows, total, examples, per_fault


def fault_lines(h, per_fault):
    """One line per fault with judged problems."""
    names = {c[0]: c[1] for c in COLUMNS}
    out = []
    for k in sorted(per_fault):
        ev = h.events[k]
        what = ", ".join("%s %d" % (names[key], n) for key, n in sorted(per_fault[k].items()))
        out.append("fault %d at %.1f s, %s: %s%s" % (
            k + 1, ev.start - T0, describe(ev.spec), what,
            (" (" + "; ".join(ev.notes) + ")") if ev.notes else ""))
    return out


COLUMNS = [  # key, Markdown heading, short heading for the terminal, judged
    ("faults", "faults", "faults", False),
    ("expected", "deliveries due", "due", False),
    ("lost_judged", "lost, surviving paths", "LOST", True),
    ("lost_other", "lost, other paths", "lost-other", False),
    ("dups_ok", "duplicates (DUP/reconnect)", "dup-ok", False),
    ("dup_violations", "duplicates, others", "DUP", True),
    ("order_violations", "order violations", "ORDER", True),
    ("sessions_lost", "sessions lost in moves", "SESS-LOST", True),
    ("sessions_lost_other", "sessions lost with their node", "sess-died", False),
    ("joiner_missing", "late joiner: entries missing", "JOINER", True),
    ("crashes", "crashes", "CRASH", True),
]


def render(h, rows, total, fmt, t_final):
    out = []
    head = [c[1] + (" *" if c[3] else "") for c in COLUMNS]
    if fmt == "md":
        out.append("| fault class | " + " | ".join(head) + " |")
        out.append("|---|" + "---:|" * len(head))
    else:
        out.append("(upper-case columns are judged; docs/fault-harness.md says what each means)")
        out.append("%-13s " % "class" + " ".join("%10s" % c[2] for c in COLUMNS))
    for cls, r in list(rows.items()) + [("total", total)]:
        if cls != "total" and r["faults"] == 0 and sum(r.values()) == 0:
            continue
        vals = [str(r[c[0]]) for c in COLUMNS]
        if cls == "none":
            vals[0] = "-"
        name = "no fault near" if cls == "none" else cls
        if fmt == "md":
            name = "**total**" if cls == "total" else name
            out.append("| " + name + " | " + " | ".join(vals) + " |")
        else:
            out.append("%-13s " % name + " ".join("%10s" % v for v in vals))
    rr = h.retained_result
    ret = []
    if rr:
        ret = [("retained entries on every node (chaos/r/#)", ", ".join(
                    "%s %d" % (n.name, c) for n, c in zip(h.nodes, rr.get("entries", []))), False),
               ("retained topics on which nodes disagree", rr.get("disagree"), True),
               ("retained topics not what was acknowledged last", rr.get("wrong"), True),
               ("deleted retained topics back", rr.get("resurrected"), True),
               ("retained topics written through a node that then died",
                rr.get("uncertain"), False)]
    node_rows = [(n.name, n.starts, len(n.crashes), n.rss_kib()) for n in h.nodes]
    if fmt == "md":
        out.append("")
        out.append("| retained check | result |")
        out.append("|---|---:|")
        for name, v, judged in ret:
            out.append("| %s%s | %s |" % (name, " *" if judged else "", v))
        out.append("")
        out.append("| node | starts | crashes | RSS at the end |")
        out.append("|---|---:|---:|---:|")
        for name, starts, crashes, rss in node_rows:
            out.append("| %s | %d | %d | %s |" % (name, starts, crashes,
                                                 "%.1f MiB" % (rss / 1024) if rss else "-"))
        out.append("")
        out.append("Columns marked * are judged: the run fails unless they are 0.")
    else:
        for name, v, judged in ret:
            out.append("%-62s %s%s" % (name, v, "  (judged)" if judged else ""))
        for name, starts, crashes, rss in node_rows:
            out.append("%s: started %d times, crashed %d times, RSS at the end %s" % (
                name, starts, crashes, "%.1f MiB" % (rss / 1024) if rss else "-"))
    return "\n".join(out)


def judged_failures(total, rr):
    bad = [c[1] for c in COLUMNS if c[3] and total[c[0]] != 0]
    if rr:
        for k in ("disagree", "wrong", "resurrected"):
            if rr.get(k) != 0:
                bad.append("retained " + k)
    return bad


# --- main ----------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Fault-injection harness for a brokerha cluster (run as root with "
                    "/usr/bin/python3). See docs/fault-harness.md.",
        epilog="fault classes:\n" + "\n".join("  %-11s %s" % c for c in FAULT_CLASSES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=DEFAULT_SERVER, help="brokerha-server binary")
    p.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
    p.add_argument("--nodes", type=int, default=3, help="3 to 5 nodes")
    p.add_argument("--duration", type=float, default=90,
                   help="seconds the whole run takes, from start to the table")
    p.add_argument("--faults", default=",".join(CLASS_NAMES),
                   help="comma-separated fault classes (default: all): " + ", ".join(CLASS_NAMES))
    p.add_argument("--max-faults", type=int, default=1000, help="at most this many faults")
    p.add_argument("--publishers", type=int, default=20)
    p.add_argument("--subscribers", type=int, default=20)
    p.add_argument("--rate", type=float, default=500, help="messages per second, all publishers")
    p.add_argument("--fanout", type=int, default=1, help="publishers each subscriber follows")
    p.add_argument("--payload", type=int, default=64, help="bytes per message")
    p.add_argument("--retained", type=int, default=50000, help="preloaded retained entries")
    p.add_argument("--retained-payload", type=int, default=64,
                   help="bytes per preloaded retained entry (50,000 x 1,400 B is more than a "
                        "link's 64 MiB queue)")
    p.add_argument("--retained-rate", type=float, default=5,
                   help="retained updates/deletes per second during the run")
    p.add_argument("--tail", type=float, default=None,
                   help="seconds without faults before the load stops (default 10, or 30 for "
                        "runs of 10 minutes or more)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds kept at the end for deliveries and retained convergence "
                        "(default 12, or 45 for runs of 10 minutes or more)")
    p.add_argument("--joiner-timeout", type=float, default=20,
                   help="seconds a late joiner has, from its start, to hold the whole retained "
                        "set (less than the 30 s anti-entropy interval, which would hide a "
                        "snapshot cut short)")
    p.add_argument("--big-messages", type=int, default=900,
                   help="messages queued in a bigsession fault's offline session")
    p.add_argument("--big-payload", type=int, default=20480, help="their size in bytes")
    p.add_argument("--no-key", action="store_true", help="a cluster without secret_key")
    p.add_argument("--report", help="write the table as Markdown to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    p.add_argument("--print-schedule", action="store_true",
                   help="print the fault schedule for the seed and exit (no root needed)")
    a = p.parse_args(argv)
    if not 3 <= a.nodes <= 5:
        p.error("--nodes must be 3 to 5")
    a.classes = [c.strip() for c in a.faults.split(",") if c.strip()]
    for c in a.classes:
        if c not in CLASS_NAMES:
            p.error("unknown fault class %r (classes: %s)" % (c, ", ".join(CLASS_NAMES)))
    long_run = a.duration >= 600
    if a.tail is None:
        a.tail = 30 if long_run else 10
    if a.settle is None:
        a.settle = 45 if long_run else 12
    a.drain_wait = min(20.0, a.settle * 0.5)
    if "joiner" in a.classes and a.retained < 1:
        p.error("the joiner class needs a retained set (--retained)")
    a.server = os.path.abspath(a.server)
    return a


def main(argv):
    global mqtt, Properties, PacketTypes
    a = parse_args(argv)
    schedule = make_schedule(a.seed, a.classes, a.nodes, a.max_faults) if a.classes else []
    if a.print_schedule:
        for k, f in enumerate(schedule[:100], start=1):
            print("%3d  after %.1f s: %s" % (k, f["gap"], describe(f)))
        return 0
    try:
        import paho.mqtt.client as m
        from paho.mqtt.properties import Properties as P
        from paho.mqtt.packettypes import PacketTypes as PT
    except ImportError:
        print("chaos: FAIL: paho-mqtt is missing: run with /usr/bin/python3 (Debian's "
              "python3-paho-mqtt, scripts/install-deps.sh)", flush=True)
        return 2
    mqtt, Properties, PacketTypes = m, P, PT

    h = Harness(a)
    h.schedule = schedule
    t_start = now()
    deadline = t_start + a.duration

    def on_signal(sig, frame):
        raise Interrupted("signal %d" % sig)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status = 3
    ok_teardown = True
    try:
        log("seed %d, %d nodes, %.0f s, faults: %s" % (a.seed, a.nodes, a.duration,
                                                       ", ".join(a.classes) or "none"))
        h.setup()
        h.preload()
        h.start_load()
        t_load_end = deadline - a.settle
        t_faults_end = t_load_end - a.tail
        h.fault_thread = threading.Thread(target=h.run_faults, args=(t_faults_end,),
                                          daemon=True, name="faults")
        h.fault_thread.start()
        next_report = now() + 10
        while now() < t_load_end:
            time.sleep(0.5)
            if now() >= next_report:
                next_report += 10
                sent = sum(len(p.msgs) for p in h.pubs)
                acked = sum(1 for p in h.pubs for m in p.msgs if m[1] is not None)
                rx = sum(len(f) for s in h.subs for f in s.first.values())
                log("load: %d published, %d acknowledged, %d first deliveries; nodes up: %s"
                    % (sent, acked, rx, " ".join(n.name for n in h.nodes if n.state == "up")))
        h.stop_faults.set()
        h.fault_thread.join(60)
        for n in h.nodes:  # a fault cut short by the end: heal and restart
            h.net.heal(n.i)
            if n.state != "up":
                if n.proc is None or n.proc.poll() is not None:
                    n.start()
                n.wait_ready(30)
        t_final = now()
        log("load stopped; waiting for the last deliveries")
        h.finish_load()
        h.check_retained(max(now() + 5, deadline))
        rows, total, examples, per_fault = analyse(h, t_final)
        text = render(h, rows, total, "text", t_final)
        print("\n" + text + "\n", flush=True)
        flines = fault_lines(h, per_fault)
        if flines:
            print("faults with judged problems:\n  " + "\n  ".join(flines), flush=True)
        if examples:
            print("examples of judged problems:\n  " + "\n  ".join(examples), flush=True)
        md = render(h, rows, total, "md", t_final)
        if flines:
            md += "\n\nFaults with judged problems:\n\n" + "\n".join("- " + x for x in flines)
        if a.report:
            with open(a.report, "w") as f:
                f.write("Seed %d, %d nodes, %.0f s, %d faults (%s), %d publishers at %.0f msg/s "
                        "in all, %d subscribers, %d retained entries.\n\n"
                        % (a.seed, a.nodes, a.duration, len(h.events),
                           ", ".join("%s %d" % (c, sum(1 for e in h.events if e.cls == c))
                                     for c in a.classes),
                           a.publishers, a.rate, a.subscribers, a.retained))
                f.write(md + "\n")
            log("report written to %s" % a.report)
        bad = judged_failures(total, h.retained_result)
        ran = collections.Counter(e.cls for e in h.events)
        log("faults run: %s" % ", ".join("%s %d" % (c, ran[c]) for c in a.classes))
        not_run = [c for c in a.classes if ran[c] == 0]
        if h.errors:
            log("FAIL: harness errors (above)")
            status = 3
        elif not_run:
            # A run that exercised less than it was asked to proves nothing about the rest.
            log("FAIL: no fault of class %s ran (a longer --duration?)" % ", ".join(not_run))
            status = 1
        elif bad:
            log("FAIL: judged columns not 0: %s" % ", ".join(bad))
            status = 1
        else:
            log("PASS: every judged column is 0")
            status = 0
    except SetupError as e:
        log("FAIL: %s" % e)
        status = 2
    except Interrupted as e:
        log("interrupted (%s): cleaning up" % e)
        status = 130
    except Exception:
        log("FAIL: harness error:\n" + traceback.format_exc())
        status = 3
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        h.stop_faults.set()
        h.monitor_stop.set()
        for p in h.pubs:
            p.stop.set()
        for s in h.subs:
            s.stop.set()
        if h.writer:
            h.writer.stop.set()
        for n in h.nodes:
            n.stop()
        if h.dns is not None and h.dns.poll() is None:
            os.kill(h.dns.pid, signal.SIGKILL)
            h.dns.wait(5)
        ok_teardown = h.net.teardown()
        if (status == 0 and not a.keep) or not os.listdir(h.work):
            shutil.rmtree(h.work, ignore_errors=True)
        else:
            log("logs and configs kept in %s" % h.work)
    if not ok_teardown and status == 0:
        status = 3
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
