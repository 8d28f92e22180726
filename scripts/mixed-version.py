#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Mixed-version cluster test: nodes of this build and of the previous release in one cluster,
as during a rolling upgrade.

    scripts/build-previous.sh                  # builds build/prev/brokerha-server/brokerha-server
    /usr/bin/python3 scripts/mixed-version.py --old build/prev/brokerha-server/brokerha-server

Starts, on loopback only (a 127.0.0.x address per node, free ports), three brokerha-server
processes in one cluster: two of this build (--new, default build/ci's server) and one of the
previous release (--old), with static members discovery, a shared secret_key and a per-session
queue bound (mqtt.max_queued_messages) above what any check has outstanding. Once every
node sees three alive members it checks, and exits 1 with a line per failed check unless all
hold:

- stream: N numbered QoS 1 messages (--messages, default 2,000) from a publisher on a new node
  to a persistent subscriber on the old node, and from the old node to a persistent subscriber
  on a new node, arrive whole and in order (duplicates are reported, not failed);
- session move, both ways, for a v5 client (clean start 0, session expiry 300 s) and a v3.1.1
  client (clean session 0): it subscribes on one version's node, disconnects, M messages
  (--queued, default 200) are published meanwhile at QoS 1, it connects to the other version's
  node: CONNACK has session present 1, the queued messages arrive whole and in order, and its
  subscription still delivers (no new SUBSCRIBE);
- takeover while connected, both ways: the same client id connecting to the other version's
  node ends the first connection;
- protocol: each new node reports broker_cluster_link_protocol{peer="<old node>"} 1 and,
  towards the other new node, a version above 1 (--protocol N: exactly N), the same both
  ways, and broker_cluster_incompatible_peers_total 0; the old node's
  broker_cluster_malformed_frames_total does not grow while the checks run (it counts the new
  nodes' capabilities frames at link up, and would count any frame of a later protocol version
  sent to it);
- no node exits during the run.

Exit status: 0 all checks held; 1 a check failed; 2 the cluster could not be brought up (or a
binary is missing); 3 an error of this script. Every process started here is stopped by its
pid, the work directory (configs, logs) is deleted unless --keep; every wait is bounded. Needs
Debian's python3 with python3-paho-mqtt 1.6 (scripts/install-deps.sh); nothing else outside the
standard library.
--inject kill-old SIGKILLs the old node halfway through the streams, to show that the checks
fail when messages are lost.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_NEW = os.path.join(ROOT, "build", "ci", "brokerha-server", "brokerha-server")
DEFAULT_OLD = os.path.join(ROOT, "build", "prev", "brokerha-server", "brokerha-server")
SESSION_EXPIRY = 300
KEEPALIVE = 20

mqtt = None          # paho.mqtt.client, imported in main()
Properties = None
PacketTypes = None

T0 = time.monotonic()


def now():
    return time.monotonic()


def log(msg):
    sys.stdout.write("[%5.1f] %s\n" % (now() - T0, msg))
    sys.stdout.flush()


class SetupError(Exception):
    """The cluster could not be brought up."""


class Interrupted(Exception):
    """SIGINT or SIGTERM."""


def wait_until(pred, timeout, step=0.1):
    end = now() + timeout
    while True:
        if pred():
            return True
        if now() >= end:
            return False
        time.sleep(step)


# --- addresses and ports -----------------------------------------------------------------------

def free_port(ip, udp_too=False):
    """A port free on ip for TCP (and UDP); bounded attempts."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind((ip, 0))
            port = t.getsockname()[1]
            if udp_too:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind((ip, port))
                except OSError:
                    continue
                finally:
                    u.close()
            return port
        finally:
            t.close()
    raise SetupError("no free port on %s" % ip)


def pick_ips(n):
    """n distinct loopback addresses, from a block chosen by the pid so that two runs rarely
    share one (ports are free-picked anyway)."""
    base = 100 + (os.getpid() % 25) * 6
    return ["127.0.0.%d" % (base + i) for i in range(n)]


# --- HTTP --------------------------------------------------------------------------------------

HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(ip, port, path, timeout=3.0):
    try:
        with HTTP.open("http://%s:%d%s" % (ip, port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return -1, b""


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def metrics(node):
    """{(name, labels string): value} of the node's /metrics, or None."""
    st, body = http_get(node.ip, node.api_port, "/metrics")
    if st != 200:
        return None
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        if m:
            try:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


# --- nodes -------------------------------------------------------------------------------------

class Node:
    def __init__(self, name, binary, version, ip, work):
        self.name, self.binary, self.version, self.ip = name, binary, version, ip
        self.mqtt_port = free_port(ip)
        self.api_port = free_port(ip)
        self.cluster_port = free_port(ip, udp_too=True)
        self.cfg = os.path.join(work, name + ".yaml")
        self.log_path = os.path.join(work, name + ".log")
        self.proc = None
        self.killed = False    # stopped on purpose (--inject), not a crash

    def write_config(self, seeds, secret_key, max_queued):
        # max_queued: the per-session queue bound (mqtt.max_queued_messages) above what a
        # check can have outstanding, so that what is missing is the cluster's loss, not the
        # bound's drops.
        with open(self.cfg, "w") as f:
            f.write(
                "mqtt:\n  port: %d\n  bind: %s\n  max_queued_messages: %d\n"
                "api:\n  port: %d\n  bind: %s\n"
                "cluster:\n  node_name: %s\n  bind: %s\n  advertise: %s\n  port: %d\n"
                "  expected_members: 3\n  config:\n    secret_key: \"%s\"\n"
                "discovery:\n  members: [%s]\n  refresh_interval: 2000\n"
                "shutdown:\n  grace_period: 2000\n  session_wait: 1000\n"
                % (self.mqtt_port, self.ip, max_queued, self.api_port, self.ip, self.name,
                   self.ip, self.ip, self.cluster_port, secret_key,
                   ", ".join('"%s"' % s for s in seeds)))

    def start(self):
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [self.binary, "--config", self.cfg], stdout=logf, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def alive_members(self):
        st, body = http_get(self.ip, self.api_port, "/api/discovery/members", timeout=2)
        if st != 200:
            return 0
        try:
            return sum(1 for m in json.loads(body) if m.get("State") == 0)
        except (ValueError, AttributeError):
            return 0

    def kill(self):
        """SIGKILL by pid, and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    %s| %s" % (self.name, t) for t in text[-lines:])


# --- MQTT clients ------------------------------------------------------------------------------

class Client:
    """A paho client on paho's network thread (loop_start: publish() from another thread only
    queues, the network thread writes, so packets leave in order): connect result, messages per
    topic, drops. No automatic reconnect: a client the broker took over stays down, as the
    checks expect."""

    def __init__(self, cid, node, v5=True, clean=True, expiry=0):
        self.cid, self.node, self.v5, self.clean, self.expiry = cid, node, v5, clean, expiry
        if v5:
            self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5,
                                 reconnect_on_failure=False)
        else:
            self.c = mqtt.Client(client_id=cid, clean_session=clean, protocol=mqtt.MQTTv311,
                                 reconnect_on_failure=False)
        self.c.max_queued_messages_set(0)
        self.c.max_inflight_messages_set(100)
        self.lock = threading.Lock()
        self.connack = threading.Event()
        self.rc = None
        self.present = None
        self.dropped = threading.Event()
        self.drop_rc = None
        self.msgs = []          # (topic, payload bytes) in arrival order
        self.acked = set()      # mids PUBACKed
        self.subacked = set()   # mids SUBACKed
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.started = False

    def _on_connect(self, cl, ud, flags, rc, props=None):
        self.rc = rc.value if hasattr(rc, "value") else int(rc)
        self.present = flags.get("session present", 0)
        self.connack.set()

    def _on_disconnect(self, cl, ud, rc, props=None):
        self.drop_rc = rc.value if hasattr(rc, "value") else int(rc)
        self.dropped.set()

    def _on_message(self, cl, ud, msg):
        with self.lock:
            self.msgs.append((msg.topic, msg.payload))

    def _on_publish(self, cl, ud, mid):
        with self.lock:
            self.acked.add(mid)

    def _on_subscribe(self, cl, ud, mid, granted, props=None):
        with self.lock:
            self.subacked.add(mid)

    def connect(self, timeout=10):
        """True when CONNACK accepted the connection within the timeout."""
        try:
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                if self.expiry:
                    props.SessionExpiryInterval = self.expiry
                self.c.connect(self.node.ip, self.node.mqtt_port, keepalive=KEEPALIVE,
                               clean_start=self.clean, properties=props)
            else:
                self.c.connect(self.node.ip, self.node.mqtt_port, keepalive=KEEPALIVE)
        except OSError as e:
            self.rc = "TCP connect failed: %s" % e
            return False
        self.c.loop_start()
        self.started = True
        return self.connack.wait(timeout) and self.rc == 0

    def subscribe(self, flt, timeout=10):
        rc, mid = self.c.subscribe(flt, qos=1)
        if rc != 0:
            return False
        return wait_until(lambda: mid in self.subacked, timeout, 0.02)

    def publish_seq(self, topic, seqs, timeout, stop_after=None):
        """Publishes b"<seq>" for each seq at QoS 1 (paho keeps 100 in flight); the number
        PUBACKed within the timeout. stop_after(i) is called after the i-th publish."""
        mids = []
        for i, s in enumerate(seqs):
            info = self.c.publish(topic, str(s).encode(), qos=1)
            if info.rc != 0:
                break
            mids.append(info.mid)
            if stop_after is not None:
                stop_after(i)
        end = now() + timeout
        while now() < end:
            with self.lock:
                n = sum(1 for m in mids if m in self.acked)
            if n == len(seqs) or self.dropped.is_set():
                return n
            time.sleep(0.02)
        with self.lock:
            return sum(1 for m in mids if m in self.acked)

    def received(self, topic):
        with self.lock:
            return [p for t, p in self.msgs if t == topic]

    def close(self, send_disconnect=True):
        try:
            if send_disconnect:
                self.c.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self.started:
            if send_disconnect:
                self.dropped.wait(1)   # the network thread writes the DISCONNECT, then ends
            self.c.loop_stop()
            self.started = False
        try:
            self.c._sock_close()  # pylint: disable=protected-access
        except Exception:  # noqa: BLE001
            pass


def judge(payloads, n):
    """(missing, duplicates, reordered, example) of a numbered stream 0..n-1: a message is out
    of order when its first copy arrives after a higher number's; example describes the first
    such arrival (or is empty)."""
    seen = set()
    dups = 0
    reordered = 0
    example = ""
    high = -1
    for i, p in enumerate(payloads):
        try:
            s = int(p)
        except ValueError:
            continue
        if s in seen:
            dups += 1
            continue
        seen.add(s)
        if s < high:
            reordered += 1
            if not example:
                example = " (first: %d arrived as message %d, after %d)" % (s, i + 1, high)
        high = max(high, s)
    missing = sum(1 for s in range(n) if s not in seen)
    return missing, dups, reordered, example


# --- the run -----------------------------------------------------------------------------------

class Run:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="brokerha-mixed-")
        self.tag = "%d%04d" % (os.getpid(), random.randrange(10000))
        self.secret_key = "".join(random.SystemRandom().choice("abcdefghijkmnpqrstuvwxyz23456789")
                                  for _ in range(32))
        self.nodes = []
        self.clients = []
        self.failures = []
        self.results = []
        self.old_malformed = None

    def fail(self, msg):
        self.failures.append(msg)
        log("FAIL: " + msg)

    def ok(self, msg):
        self.results.append(msg)
        log("ok: " + msg)

    def client(self, *a, **kw):
        c = Client(*a, **kw)
        self.clients.append(c)
        return c

    # --- bring-up ------------------------------------------------------------------------------
    def setup(self):
        a = self.args
        for path, what in ((a.new, "--new"), (a.old, "--old")):
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise SetupError("no server binary at %s (%s; the previous release: "
                                 "scripts/build-previous.sh; this build: cmake --build --preset "
                                 "ci --target brokerha-server)" % (path, what))
        ips = pick_ips(3)
        self.new1 = Node("new-1", a.new, "new", ips[0], self.work)
        self.old = Node("old-1", a.old, "old", ips[1], self.work)
        self.new2 = Node("new-2", a.new, "new", ips[2], self.work)
        self.nodes = [self.new1, self.old, self.new2]
        for n in self.nodes:
            seeds = ["%s:%d" % (m.ip, m.cluster_port) for m in self.nodes if m is not n]
            n.write_config(seeds, self.secret_key, max(10000, 2 * (a.messages + a.queued)))
        for n in self.nodes:
            n.start()
        if not wait_until(lambda: all(n.alive() and n.alive_members() == 3 for n in self.nodes)
                          or not all(n.alive() for n in self.nodes), 30, 0.25) \
                or not all(n.alive() for n in self.nodes):
            raise SetupError("the 3 nodes did not all see 3 alive members within 30 s: %s" % (
                ", ".join("%s %s" % (n.name, "members %d" % n.alive_members() if n.alive()
                                     else "exited %s" % n.proc.returncode)
                          for n in self.nodes)))
        log("cluster up: %s (new: %s), %s (old: %s), %s; every node sees 3 members" % (
            self.new1.name, a.new, self.old.name, a.old, self.new2.name))

    # --- checks --------------------------------------------------------------------------------
    def wait_route(self, sub, pub, flt_prefix, timeout=10):
        """Publishes probes on <prefix>/probe from pub until sub receives one: the route of
        sub's subscription has reached pub's node."""
        topic = flt_prefix + "/probe"
        end = now() + timeout
        while now() < end:
            pub.c.publish(topic, b"probe", qos=1)
            if wait_until(lambda: sub.received(topic), 0.3, 0.02):
                return True
        return False

    def check_protocol(self):
        """Each new node speaks version 1 to the old node and, to the other new node, --protocol
        (by default any version above 1: the top of this build's range, whatever it is)."""
        old = self.old.name
        want_new = self.args.protocol

        def new_ok(v):
            return v is not None and (v == want_new if want_new else v >= 2)

        between = []
        for me, other in ((self.new1, self.new2), (self.new2, self.new1)):
            got = {}

            def seen(me=me, other=other, got=got):
                m = metrics(me) or {}
                got.clear()
                for peer in (old, other.name):
                    got[peer] = m.get(("broker_cluster_link_protocol", '{peer="%s"}' % peer))
                got["incompatible"] = m.get(("broker_cluster_incompatible_peers_total", ""))
                return got[old] == 1 and new_ok(got[other.name])

            wait_until(seen, 10, 0.25)
            good = True
            if got.get(old) != 1:
                good = False
                self.fail("%s: broker_cluster_link_protocol{peer=\"%s\"} is %s, not 1" % (
                    me.name, old, got.get(old)))
            if not new_ok(got.get(other.name)):
                good = False
                self.fail("%s: broker_cluster_link_protocol{peer=\"%s\"} is %s, not %s" % (
                    me.name, other.name, got.get(other.name),
                    int(want_new) if want_new else "2 or above"))
            if got.get("incompatible") != 0:
                good = False
                self.fail("%s: broker_cluster_incompatible_peers_total is %s, not 0" % (
                    me.name, got.get("incompatible")))
            between.append(got.get(other.name))
            if good:
                self.ok("%s speaks protocol 1 to %s and %d to %s; 0 incompatible peers" % (
                    me.name, old, got[other.name], other.name))
        if None not in between and between[0] != between[1]:
            self.fail("the new nodes speak different versions to each other: %s and %s" % (
                between[0], between[1]))
        self.old_malformed = self.malformed(self.old)
        log("info: %s counted %s malformed cluster frames (the new nodes' capabilities frames)"
            % (old, self.old_malformed))

    @staticmethod
    def malformed(node):
        m = metrics(node)
        if m is None:
            return None
        v = m.get(("broker_cluster_malformed_frames_total", ""))
        return None if v is None else int(v)

    def check_gated(self):
        """The old node counted no malformed frame while the checks ran: the new nodes sent it
        nothing of protocol version 2 (after the capabilities of each link up)."""
        if self.old_malformed is None or not self.old.alive():
            return
        now_count = self.malformed(self.old)
        if now_count is None:
            self.fail("%s: no broker_cluster_malformed_frames_total in /metrics" % self.old.name)
        elif now_count != self.old_malformed:
            self.fail("%s counted %d malformed cluster frames during the checks: a new node sent "
                      "it a frame its protocol version lacks" % (
                          self.old.name, now_count - self.old_malformed))
        else:
            self.ok("%s counted no malformed cluster frame during the checks" % self.old.name)

    def check_streams(self):
        """Both directions at once: new-1 -> old-1 and old-1 -> new-2."""
        a = self.args
        n = a.messages
        legs = []
        for src, dst in ((self.new1, self.old), (self.old, self.new2)):
            name = "%s->%s" % (src.name, dst.name)
            prefix = "mv/%s/stream-%s-%s" % (self.tag, src.version, dst.version)
            sub = self.client("mv-%s-sub-%s" % (self.tag, dst.name), dst, v5=True, clean=False,
                              expiry=SESSION_EXPIRY)
            pub = self.client("mv-%s-pub-%s-%s" % (self.tag, src.name, dst.name), src)
            if not sub.connect() or not pub.connect():
                self.fail("stream %s: the clients could not connect" % name)
                return
            if not sub.subscribe(prefix + "/#"):
                self.fail("stream %s: no SUBACK" % name)
                return
            if not self.wait_route(sub, pub, prefix):
                self.fail("stream %s: the subscription's route did not reach %s within 10 s"
                          % (name, src.name))
                return
            legs.append((name, prefix + "/data", sub, pub))

        t0 = now()
        injected = [False]

        def maybe_inject(i):
            if a.inject == "kill-old" and i == n // 2 and not injected[0]:
                injected[0] = True
                log("inject: SIGKILL of %s halfway through the streams" % self.old.name)
                self.old.killed = True
                self.old.kill()

        acked = {}
        threads = []
        for name, topic, sub, pub in legs:
            def send(name=name, topic=topic, pub=pub):
                acked[name] = pub.publish_seq(topic, range(n), timeout=30,
                                              stop_after=maybe_inject)
            t = threading.Thread(target=send, daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(40)
        for name, topic, sub, pub in legs:
            if acked.get(name, 0) != n:
                self.fail("stream %s: %d of %d publishes acknowledged" % (
                    name, acked.get(name, 0), n))
            # Everything acknowledged must arrive: wait while it keeps coming, at most 20 s.
            last = [-1, now()]

            def settled(sub=sub, topic=topic):
                got = len(set(sub.received(topic)))
                if got >= n:
                    return True
                if got != last[0]:
                    last[0], last[1] = got, now()
                return now() - last[1] > 5
            wait_until(settled, 20, 0.05)
            missing, dups, reordered, example = judge(sub.received(topic), n)
            line = "stream %s: %d QoS 1 messages, %d missing, %d duplicates, %d out of order%s" % (
                name, n, missing, dups, reordered, example)
            if missing or reordered:
                self.fail(line)
            else:
                self.ok(line + " (%.1f s)" % (now() - t0))
        for _, _, sub, pub in legs:
            sub.close()
            pub.close()

    def check_move(self, v5, src, dst, via):
        """A persistent session made on src, offline while M messages are published on via,
        resumed on dst."""
        a = self.args
        kind = "v5" if v5 else "v3.1.1"
        name = "session move %s %s->%s" % (kind, src.name, dst.name)
        prefix = "mv/%s/move-%s-%s-%s" % (self.tag, "5" if v5 else "4", src.version, dst.version)
        cid = "mv-%s-move-%s-%s-%s" % (self.tag, "5" if v5 else "4", src.version, dst.version)
        first = self.client(cid, src, v5=v5, clean=False, expiry=SESSION_EXPIRY)
        pub = self.client(cid + "-pub", via)
        if not first.connect() or not pub.connect():
            self.fail("%s: the clients could not connect" % name)
            return
        if not first.subscribe(prefix + "/#"):
            self.fail("%s: no SUBACK on %s" % (name, src.name))
            return
        if not self.wait_route(first, pub, prefix):
            self.fail("%s: the route did not reach %s within 10 s" % (name, via.name))
            return
        first.close()   # a normal DISCONNECT: the session stays (expiry 300 s / clean session 0)
        if not first.dropped.wait(5):
            self.fail("%s: the first connection did not close" % name)
            return
        m = a.queued
        topic = prefix + "/queued"
        got = pub.publish_seq(topic, range(m), timeout=20)
        if got != m:
            self.fail("%s: %d of %d publishes acknowledged while the client was away" % (
                name, got, m))
        second = self.client(cid, dst, v5=v5, clean=False, expiry=SESSION_EXPIRY)
        if not second.connect():
            self.fail("%s: no CONNACK (accepted) from %s (rc %s)" % (name, dst.name, second.rc))
            return
        if second.present != 1:
            self.fail("%s: CONNACK session present %s on %s, not 1" % (
                name, second.present, dst.name))
        wait_until(lambda: len(set(second.received(topic))) >= m, 15, 0.05)
        missing, dups, reordered, example = judge(second.received(topic), m)
        # The subscription moved with the session: a message published after the move (on the
        # node the session came from) arrives without a new SUBSCRIBE. Retried (bounded) while
        # the new node's route announcement travels.
        after = prefix + "/after"
        back = self.client(cid + "-pub2", src)
        live = back.connect()
        end = now() + 10
        while live and not second.received(after) and now() < end:
            back.c.publish(after, b"after", qos=1)
            wait_until(lambda: second.received(after), 0.3, 0.02)
        line = ("%s: session present %s, %d queued QoS 1 messages, %d missing, %d duplicates, "
                "%d out of order%s; subscription %s after the move" % (
                    name, second.present, m, missing, dups, reordered, example,
                    "delivers" if second.received(after) else "DOES NOT deliver"))
        if missing or reordered or not second.received(after):
            self.fail(line)
        elif second.present == 1:
            self.ok(line)
        for c in (second, pub, back):
            c.close()

    def check_takeover(self, v5, first_node, second_node):
        kind = "v5" if v5 else "v3.1.1"
        name = "takeover %s %s->%s" % (kind, first_node.name, second_node.name)
        cid = "mv-%s-take-%s-%s-%s" % (self.tag, "5" if v5 else "4", first_node.version,
                                       second_node.version)
        first = self.client(cid, first_node, v5=v5, clean=False, expiry=SESSION_EXPIRY)
        if not first.connect():
            self.fail("%s: the first client could not connect to %s" % (name, first_node.name))
            return
        if not first.subscribe("mv/%s/take/%s" % (self.tag, kind)):
            self.fail("%s: no SUBACK" % name)
            return
        second = self.client(cid, second_node, v5=v5, clean=False, expiry=SESSION_EXPIRY)
        if not second.connect():
            self.fail("%s: the second connection was refused (rc %s)" % (name, second.rc))
            return
        kicked = first.dropped.wait(10)
        line = "%s: second connection accepted (session present %s); first %s" % (
            name, second.present,
            "closed by the broker (%s)" % first.drop_rc if kicked else "STILL OPEN after 10 s")
        if not kicked:
            self.fail(line)
        elif second.present != 1:
            self.fail(line + "; session present should be 1")
        else:
            self.ok(line)
        first.close(send_disconnect=False)
        second.close()

    def check_alive(self):
        for n in self.nodes:
            if not n.alive() and not n.killed:
                self.fail("%s (%s) exited during the run: status %s" % (
                    n.name, n.version, n.proc.returncode))

    def run(self):
        self.setup()
        self.check_protocol()
        self.check_streams()
        for v5 in (True, False):
            self.check_move(v5, self.old, self.new1, via=self.new2)
            self.check_move(v5, self.new1, self.old, via=self.new2)
        for v5 in (True, False):
            self.check_takeover(v5, self.old, self.new2)
            self.check_takeover(v5, self.new2, self.old)
        self.check_gated()
        self.check_alive()

    def cleanup(self):
        for c in self.clients:
            try:
                c.close(send_disconnect=False)
            except Exception:  # noqa: BLE001
                pass
        for n in self.nodes:
            n.kill()
        if self.args.keep:
            log("work directory kept: %s" % self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    global mqtt, Properties, PacketTypes
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new", default=DEFAULT_NEW, help="this build's server (default build/ci's)")
    p.add_argument("--old", default=DEFAULT_OLD,
                   help="the previous release's server (default build/prev's)")
    p.add_argument("--messages", type=int, default=2000, help="messages per stream direction")
    p.add_argument("--queued", type=int, default=200,
                   help="messages published while a moving session is offline")
    p.add_argument("--protocol", type=int, default=0,
                   help="the cluster protocol version the two new nodes must speak to each "
                        "other (default: any above 1)")
    p.add_argument("--inject", choices=["kill-old"],
                   help="a fault that must make the run fail (the test of the test)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = p.parse_args()
    if args.messages < 1 or args.queued < 1:
        p.error("--messages and --queued must be at least 1")
    try:
        import paho.mqtt.client as m
        from paho.mqtt.properties import Properties as P
        from paho.mqtt.packettypes import PacketTypes as PT
    except ImportError:
        print("mixed-version: FAIL: paho-mqtt is missing: run with /usr/bin/python3 (Debian's "
              "python3-paho-mqtt, scripts/install-deps.sh)", flush=True)
        return 2
    mqtt, Properties, PacketTypes = m, P, PT

    def on_signal(signum, frame):
        raise Interrupted()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    r = None
    status = 0
    try:
        r = Run(args)
        r.run()
        status = 1 if r.failures else 0
    except SetupError as e:
        print("mixed-version: FAIL: %s" % e, flush=True)
        status = 2
    except Interrupted:
        print("mixed-version: interrupted", flush=True)
        status = 130
    except Exception:  # noqa: BLE001 - a bug of this script: say so, and still clean up
        traceback.print_exc()
        print("mixed-version: FAIL: harness error (above)", flush=True)
        status = 3
    finally:
        if r is not None:
            if status != 0:
                for n in r.nodes:
                    t = n.tail()
                    if t:
                        print("  last lines of %s (%s):\n%s" % (n.name, n.version, t), flush=True)
            try:
                r.cleanup()
            except Interrupted:
                pass
    if r is not None and status in (0, 1):
        print("mixed-version: %d checks held, %d failed, %.1f s" % (
            len(r.results), len(r.failures), now() - T0), flush=True)
        for f in r.failures:
            print("  FAILED: " + f, flush=True)
        print("mixed-version: %s" % ("PASS" if status == 0 else "FAIL"), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
