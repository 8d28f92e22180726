#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Runs the commands of the quick start and the local cluster exactly as the docs write them.

    scripts/test-docs.py --server build/ci/brokerha-server/brokerha-server

The docs mark the fenced blocks a reader is told to type with an HTML comment on the line
before the fence (invisible when rendered):

    <!-- doc-test: quickstart -->      scripts/run.sh and scripts/test.sh (README.md and
                                       docs/quickstart.md must give the same block)
    <!-- doc-test: quickstart-try -->  an MQTT subscriber and a publisher against that broker
    <!-- doc-test: local-cluster -->   scripts/local-cluster.sh
    <!-- doc-test: local-cluster-try -->  a subscriber on node 2, a publisher on node 1

Each command line is run from the repository root with /bin/bash, as written; a line ending in
`&` is started in the background. What the test adds is environment only: BROKERHA_SERVER (the
scripts then skip their own build and use the binary the `ci` stage built), BROKER_* overrides
that put the quick-start broker on loopback and free ports (the documented command binds
0.0.0.0:1883 and :8080), and a mosquitto client options file ($XDG_CONFIG_HOME/mosquitto_sub,
one `-p PORT` line: the clients' documented default port then reaches that broker). The
local-cluster commands run with the script's default ports (18830+), which must be free.
`scripts/test.sh` is not run recursively: the test checks that it is the command .ci/run runs.

Every process started here is stopped by its pid (the scripts' own children by the scripts'
exit traps; a process group this test created is signalled only if its leader did not exit).
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from config_keys import config_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"^<!--\s*doc-test:\s*([\w-]+)\s*-->\s*$")


STARTED = []  # every process this test started, stopped on failure too


def fail(message):
    print(f"test-docs: FAIL: {message}", flush=True)
    for p in STARTED:
        p.kill_quietly()
    sys.exit(1)


def log(message):
    print(f"test-docs: {message}", flush=True)


def blocks(path):
    """{marker: [command lines]} of the marked fenced blocks of a Markdown file."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().splitlines()
    found = {}
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i].strip())
        if m:
            check_fence = i + 1 < len(lines) and lines[i + 1].startswith("```")
            if not check_fence:
                fail(f"{path}:{i + 1}: doc-test marker not followed by a fenced block")
            j = i + 2
            commands = []
            while j < len(lines) and not lines[j].startswith("```"):
                text = lines[j].split(" #", 1)[0].strip()  # drop trailing comments
                if text and not text.startswith("#"):
                    commands.append(text)
                j += 1
            if m.group(1) in found:
                fail(f"{path}: doc-test block {m.group(1)} appears twice")
            found[m.group(1)] = commands
            i = j
        i += 1
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(host, port):
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except Exception:  # noqa: BLE001 - not up yet
        return None


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    fail(f"timed out after {timeout}s waiting for {what}")


class Started:
    """A process this test started (its own session, so a leftover child can be found)."""

    def __init__(self, line, env, out_path):
        self.line = line
        self.out_path = out_path
        self.out = open(out_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(["/bin/bash", "-c", line], cwd=ROOT, env=env,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        STARTED.append(self)
        log(f"started [{self.proc.pid}]: {line}")

    def kill_quietly(self):
        """SIGTERM to the pid we started, then SIGKILL to the process group it leads."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def output(self):
        with open(self.out_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the pid we started; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Only the process group this test created (leader self.proc.pid).
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                fail(f"'{self.line}' did not stop within {timeout}s of signal {sig}")
        self.out.close()
        return self.proc.returncode


def run_foreground(line, env, timeout=60):
    log(f"running: {line}")
    r = subprocess.run(["/bin/bash", "-c", line], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        fail(f"'{line}' exited with {r.returncode}:\n{r.stdout}")
    return r.stdout


def start_line(line, env, work, name):
    """A documented line: ending in `&` -> background (returned), else run to completion."""
    if line.endswith("&"):
        return Started(line[:-1].strip(), env, os.path.join(work, name))
    run_foreground(line, env)
    return None


def metric(api, name):
    try:
        with urllib.request.urlopen(f"{api}/metrics", timeout=2) as r:
            for text in r.read().decode().splitlines():
                parts = text.split()
                if len(parts) == 2 and parts[0] == name:
                    return float(parts[1])
    except Exception:  # noqa: BLE001
        pass
    return 0.0


def check_try(try_lines, env, work, api, expect, label):
    """Runs a subscriber (a background line) and then a publisher; the subscriber must print
    `expect` and exit."""
    if len(try_lines) != 2 or not try_lines[0].endswith("&"):
        fail(f"{label}: expected a background subscriber line and a publisher line")
    sub = start_line(try_lines[0], env, work, f"{label}-sub.out")
    wait_for(lambda: metric(api, "broker_subscriptions") >= 1 or sub.proc.poll() is not None, 20,
             f"{label}: the subscription")
    if sub.proc.poll() is not None:
        fail(f"{label}: the subscriber exited early:\n{sub.output()}")
    time.sleep(0.5)  # in cluster mode the SUBACK precedes nothing we can observe from here
    start_line(try_lines[1], env, work, f"{label}-pub.out")
    try:
        sub.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        sub.stop()
        fail(f"{label}: the subscriber received nothing:\n{sub.output()}")
    out = sub.output()
    sub.stop()
    if expect not in out:
        fail(f"{label}: the subscriber printed {out!r}, expected {expect!r}")
    log(f"  {label}: the subscriber got '{out.strip()}'")


def check_configuration_reference(server):
    """Every key --check-config prints is documented in docs/configuration.md."""
    import yaml  # python3-yaml (scripts/install-deps.sh)
    r = subprocess.run([server, "--check-config"], cwd=tempfile.mkdtemp(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("BROKER_")})
    if r.returncode != 0:
        fail(f"brokerha-server --check-config on the defaults failed:\n{r.stderr}")
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        doc = f.read()
    keys = list(config_keys(yaml.safe_load(r.stdout)))
    missing = [k for k in keys
               if f"`{k}`" not in doc
               and not (k.startswith("cluster.config.") and f"`{k.rsplit('.', 1)[1]}`" in doc)]
    if missing:
        fail(f"docs/configuration.md does not document {missing}")
    log(f"docs/configuration.md documents all {len(keys)} keys of the effective configuration")


def check_links():
    """Relative links of README.md, CHANGELOG.md, docs/*.md and packaging/**/README.md point to
    files that exist."""
    pages = ["README.md", "CHANGELOG.md"]
    pages += [os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))
              if f.endswith(".md")]
    for base, _, files in os.walk(os.path.join(ROOT, "packaging")):
        pages += [os.path.relpath(os.path.join(base, f), ROOT) for f in files if f == "README.md"]
    count = 0
    for page in pages:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page),
                                                 target.split("#", 1)[0]))
            if not os.path.exists(path):
                fail(f"{page}: the link ({target}) points to nothing")
            count += 1
    log(f"{count} relative links in {len(pages)} pages resolve")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    args = parser.parse_args()
    server = os.path.abspath(args.server)
    if not os.access(server, os.X_OK):
        fail(f"{server} is not executable (run the `ci` stage first)")

    check_links()
    check_configuration_reference(server)

    readme = blocks("README.md")
    quick = blocks("docs/quickstart.md")
    cluster_doc = quick
    for name in ("quickstart", "quickstart-try", "local-cluster", "local-cluster-try"):
        if name not in quick:
            fail(f"docs/quickstart.md has no doc-test block '{name}'")
    if readme.get("quickstart") != quick["quickstart"]:
        fail(f"README.md's quick start {readme.get('quickstart')} differs from "
             f"docs/quickstart.md's {quick['quickstart']}")
    commands = quick["quickstart"]
    if len(commands) != 2:
        fail(f"the quick start has {len(commands)} commands, not two: {commands}")
    run_cmd, test_cmd = commands
    log(f"quick start: '{run_cmd}' and '{test_cmd}' (README.md and docs/quickstart.md agree)")

    # scripts/test.sh is what CI runs; running it here would recurse.
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci_lines = [shlex.split(l) for l in f.read().splitlines() if l and not l.startswith("#")]
    if not any(words[-2:] == ["bash", test_cmd] or words[-1:] == [test_cmd] for words in ci_lines):
        fail(f".ci/run does not run '{test_cmd}'")
    log(f"  '{test_cmd}': the command .ci/run runs")

    work = tempfile.mkdtemp(prefix="brokerha-doc-test.")
    mqtt_port, api_port = free_port(), free_port()
    with open(os.path.join(work, "mosquitto_sub"), "w", encoding="utf-8") as f:
        f.write(f"-p {mqtt_port}\n")
    with open(os.path.join(work, "mosquitto_pub"), "w", encoding="utf-8") as f:
        f.write(f"-p {mqtt_port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(BROKERHA_SERVER=server, XDG_CONFIG_HOME=work, BROKER_MQTT_BIND="127.0.0.1",
               BROKER_MQTT_PORT=str(mqtt_port), BROKER_API_BIND="127.0.0.1",
               BROKER_API_PORT=str(api_port))
    if os.path.exists(os.path.join(ROOT, "config.yaml")) or os.path.exists("/config/config.yaml"):
        fail("a ./config.yaml or /config/config.yaml exists: the quick start would not run on "
             "the defaults it describes")

    # 1. The quick-start server, then the documented try commands against it.
    api = f"http://127.0.0.1:{api_port}"
    broker = Started(run_cmd, env, os.path.join(work, "run.out"))
    wait_for(lambda: http_status(f"{api}/ready") == 200 or broker.proc.poll() is not None, 60,
             f"'{run_cmd}' to become ready")
    if broker.proc.poll() is not None:
        fail(f"'{run_cmd}' exited with {broker.proc.returncode}:\n{broker.output()}")
    log(f"  '{run_cmd}': ready (MQTT 127.0.0.1:{mqtt_port}, API {api})")
    check_try(quick["quickstart-try"], env, work, api, "demo/hello hello brokerha",
              "quickstart-try")
    code = broker.stop()
    if code != 0:
        fail(f"'{run_cmd}' exited with {code} on SIGTERM:\n{broker.output()}")
    log(f"  '{run_cmd}': stopped cleanly by SIGTERM")

    # 2. The local cluster, on the script's default ports, then the documented try commands.
    cluster_cmds = cluster_doc["local-cluster"]
    if len(cluster_cmds) != 1:
        fail(f"expected one local-cluster command, got {cluster_cmds}")
    for port in (18831, 18832, 18833, 18850):
        if not port_free("127.0.0.1", port):
            fail(f"port {port} (the local cluster's default ports) is in use")
    cluster_env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    empty = os.path.join(work, "empty-xdg")
    os.mkdir(empty)
    cluster_env.update(BROKERHA_SERVER=server, XDG_CONFIG_HOME=empty)
    cluster = Started(cluster_cmds[0].rstrip("&").strip(), cluster_env,
                      os.path.join(work, "cluster.out"))
    wait_for(lambda: "3 nodes ready" in cluster.output() or cluster.proc.poll() is not None, 120,
             "the local cluster to become ready")
    if cluster.proc.poll() is not None:
        fail(f"'{cluster.line}' exited with {cluster.proc.returncode}:\n{cluster.output()}")
    log(f"  '{cluster.line}': 3 nodes ready")
    m = re.search(r"node2: mqtt://127\.0\.0\.1:(\d+)\s+http://([\d.]+:\d+)/", cluster.output())
    if not m:
        fail(f"the local cluster did not print node2's addresses:\n{cluster.output()}")
    check_try(cluster_doc["local-cluster-try"], cluster_env, work, f"http://{m.group(2)}",
              "demo/1 hi", "local-cluster-try")
    # Ctrl-C stops the cluster, as the doc says.
    code = cluster.stop(signal.SIGINT, timeout=60)
    if code not in (0, 130):
        fail(f"'{cluster.line}' exited with {code} on Ctrl-C:\n{cluster.output()}")
    log(f"  '{cluster.line}': stopped by Ctrl-C (SIGINT)")

    shutil.rmtree(work, ignore_errors=True)
    log("every documented quick-start and local-cluster command worked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
