#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A tiny authoritative DNS server for tests and local clusters (Python 3 stdlib only).

    /usr/bin/python3 dns_server.py --bind 127.0.0.1 --port 0 --zone zone.json [--log queries.log]

Serves UDP and TCP on the same port. With --port 0 it picks a port free for both and prints
`PORT <n>` on stdout (flushed) once both sockets listen; nothing else is written to stdout
unless `--log -` is given. Each query is logged as one line `<udp|tcp> <TYPE> <name>` to the
--log file (appended, flushed), so tests can see e.g. that a truncated answer was retried
over TCP.

The zone file is re-read on every query, so a test changes the answers by rewriting it
(write a temporary file and rename it over the zone). It maps names (case-insensitive, a
trailing dot is ignored) to records and modes:

    {
      "_broker._tcp.test": {"SRV": [{"priority": 0, "weight": 0, "port": 7946,
                                     "target": "n1.test"}]},
      "n1.test": {"A": ["10.0.0.1"], "AAAA": ["fd00::1"]},
      "gone.test": {"mode": "nxdomain"},
      "*": {"mode": "nxdomain"}
    }

Modes (per name; "*" applies to names not listed, which otherwise get NXDOMAIN):
    nxdomain   rcode 3, no records
    servfail   rcode 2
    refused    rcode 5
    silent     never answers (over TCP: keeps the connection open without answering)
    malformed  the query's header and question, then garbage where the answer should be
    garbage    random bytes only (not even the query id)
    truncate   over UDP: TC set and no records; over TCP: the full answer
A name without a mode answers its records of the asked type (NOERROR, possibly no records);
SRV answers carry the targets' A/AAAA records in the additional section. UDP answers longer
than 512 bytes are truncated (TC) like a real server's. TTLs are 0.
"""

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import threading

TYPES = {1: "A", 28: "AAAA", 33: "SRV", 255: "ANY"}
CLASS_IN = 1
UDP_LIMIT = 512


class Server:
    def __init__(self, zone_path, log_path):
        self.zone_path = zone_path
        self.log_path = log_path
        self.log_lock = threading.Lock()

    # --- zone -------------------------------------------------------------------------------

    def load_zone(self):
        with open(self.zone_path, "r", encoding="utf-8") as f:
            raw = json.load(f)
        zone = {}
        for name, entry in raw.items():
            zone[norm(name)] = entry
        return zone

    def log(self, proto, qtype, qname):
        if not self.log_path:
            return
        line = "%s %s %s\n" % (proto, TYPES.get(qtype, str(qtype)), qname)
        with self.log_lock:
            if self.log_path == "-":
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(line)
                    f.flush()

    # --- answering --------------------------------------------------------------------------

    def answer(self, query, proto):
        """The reply to `query` (bytes), or None for no reply."""
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", query[:6])
        if flags & 0x8000 or qdcount != 1:
            return None  # a response, or more than one question: ignore
        try:
            qname, qtype, qclass, end = parse_question(query, 12)
        except ValueError:
            return header(qid, flags, 1, 0, 0) + b""  # FORMERR
        question = query[12:end]
        self.log(proto, qtype, qname)

        try:
            zone = self.load_zone()
        except (OSError, ValueError):
            return header(qid, flags, 2, 1, 0) + question  # SERVFAIL: no usable zone

        key = norm(qname)
        entry = zone.get(key)
        if entry is None:
            entry = zone.get("*", {"mode": "nxdomain"})
        mode = entry.get("mode", "")

        if mode == "silent":
            return None
        if mode == "garbage":
            return os.urandom(23)
        if mode == "nxdomain":
            return header(qid, flags, 3, 1, 0, aa=True) + question
        if mode == "servfail":
            return header(qid, flags, 2, 1, 0) + question
        if mode == "refused":
            return header(qid, flags, 5, 1, 0) + question
        if mode == "malformed":
            # A plausible header (id, one question, one answer) over bytes that do not parse:
            # a compression pointer past the end, then a truncated record.
            return header(qid, flags, 0, 1, 1, aa=True) + question + b"\xc0\xff\x00\x21\x00"
        if mode == "truncate" and proto == "udp":
            return header(qid, flags, 0, 1, 0, aa=True, tc=True) + question

        answers, additional = self.records(zone, key, qtype, qclass)
        reply = header(qid, flags, 0, 1, len(answers), arcount=len(additional), aa=True)
        reply += question + b"".join(answers) + b"".join(additional)
        if proto == "udp" and len(reply) > UDP_LIMIT:
            return header(qid, flags, 0, 1, 0, aa=True, tc=True) + question
        return reply

    def records(self, zone, key, qtype, qclass):
        entry = zone.get(key, {})
        answers, additional = [], []
        if qclass != CLASS_IN:
            return answers, additional
        name_ptr = b"\xc0\x0c"  # the question's name
        if qtype in (1, 255):
            for a in entry.get("A", []):
                answers.append(rr(name_ptr, 1, ipaddress.IPv4Address(a).packed))
        if qtype in (28, 255):
            for a in entry.get("AAAA", []):
                answers.append(rr(name_ptr, 28, ipaddress.IPv6Address(a).packed))
        if qtype in (33, 255):
            for s in entry.get("SRV", []):
                target = s.get("target", ".")
                rdata = struct.pack("!HHH", int(s.get("priority", 0)), int(s.get("weight", 0)),
                                    int(s.get("port", 0))) + encode_name(target)
                answers.append(rr(name_ptr, 33, rdata))
                t = zone.get(norm(target), {})
                for a in t.get("A", []):
                    additional.append(rr(encode_name(target), 1, ipaddress.IPv4Address(a).packed))
                for a in t.get("AAAA", []):
                    additional.append(rr(encode_name(target), 28,
                                         ipaddress.IPv6Address(a).packed))
        return answers, additional

    # --- transports -------------------------------------------------------------------------

    def serve_udp(self, sock):
        while True:
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:
                return
            try:
                reply = self.answer(data, "udp")
            except Exception as e:  # a bad zone entry: say so, keep serving
                sys.stderr.write("dns_server: %r\n" % (e,))
                reply = None
            if reply is not None:
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    pass

    def serve_tcp(self, listener):
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self.tcp_conn, args=(conn,), daemon=True).start()

    def tcp_conn(self, conn):
        with conn:
            while True:
                head = recv_exact(conn, 2)
                if head is None:
                    return
                (n,) = struct.unpack("!H", head)
                data = recv_exact(conn, n)
                if data is None:
                    return
                try:
                    reply = self.answer(data, "tcp")
                except Exception as e:
                    sys.stderr.write("dns_server: %r\n" % (e,))
                    reply = None
                if reply is None:
                    continue  # silent: keep reading until the client gives up
                try:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return


def norm(name):
    return name.rstrip(".").lower()


def header(qid, qflags, rcode, qdcount, ancount, arcount=0, aa=False, tc=False):
    flags = 0x8000 | (qflags & 0x7800) | (qflags & 0x0100) | 0x0080 | (rcode & 0xF)
    if aa:
        flags |= 0x0400
    if tc:
        flags |= 0x0200
    return struct.pack("!HHHHHH", qid, flags, qdcount, ancount, 0, arcount)


def rr(name, rtype, rdata):
    return name + struct.pack("!HHIH", rtype, CLASS_IN, 0, len(rdata)) + rdata


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        b = label.encode("ascii")
        if len(b) > 63:
            raise ValueError("label too long: " + label)
        out += bytes([len(b)]) + b
    return out + b"\x00"


def parse_question(msg, pos):
    labels = []
    while True:
        if pos >= len(msg):
            raise ValueError("short question")
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed question")
        if pos + n > len(msg):
            raise ValueError("short label")
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(msg):
        raise ValueError("short question")
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return ".".join(labels), qtype, qclass, pos + 4


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = conn.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def bind_pair(address, port):
    """UDP and TCP sockets bound to the same port (port 0: one free for both)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind((address, port))
            chosen = udp.getsockname()[1]
            tcp.bind((address, chosen))
            tcp.listen(16)
            return udp, tcp, chosen
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise OSError("no port free for both UDP and TCP")


def main():
    p = argparse.ArgumentParser(description="Tiny DNS server for brokerha tests.")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--zone", required=True, help="zone JSON file, re-read on every query")
    p.add_argument("--log", default="", help="query log file ('-': stdout)")
    args = p.parse_args()

    server = Server(args.zone, args.log)
    udp, tcp, port = bind_pair(args.bind, args.port)
    threading.Thread(target=server.serve_udp, args=(udp,), daemon=True).start()
    threading.Thread(target=server.serve_tcp, args=(tcp,), daemon=True).start()
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
