#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Renders packaging/kubernetes (the base and every overlay) with `kubectl kustomize` and checks
what a cluster would get.

    scripts/check-kubernetes.py --server PATH/brokerha-server

For each rendering: the objects broker-ha's manifests have (Namespace; a headless Service on
7946 TCP+UDP with publishNotReadyAddresses; a LoadBalancer Service for MQTT; the ConfigMap with
config.yaml; a Deployment) plus a PodDisruptionBudget; every namespaced object in the Namespace;
selectors that select the pods; the pod spec (enableServiceLinks false, a grace period,
anti-affinity by host, readiness /ready and liveness /healthz on the API port, non-root); the
image tag equal to the CMake project's version; and the configuration as the pod sees it:
config.yaml plus the container's BROKER_* environment (downward-API values filled in like a
pod's, mounted Secrets as generated test certificates) is validated by
`brokerha-server --check-config`, and the effective values must agree with the manifests
(ports, expected_members == replicas, discovery.domain == the headless Service's SRV name,
cluster.config.secret_key set from a required Secret and cluster.insecure off).

kubectl must be on PATH: the machine image carries a current one. Debian's
kubernetes-client is not a substitute (it conflicts with that package and its kustomize is old),
so a missing kubectl is an error, not a skip.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # Debian: python3-yaml (scripts/install-deps.sh)
    sys.exit("check-kubernetes: FAIL: python3-yaml is missing (run scripts/install-deps.sh)")

from config_keys import config_keys  # noqa: E402 (after the yaml check)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUSTOMIZE_DIR = os.path.join(ROOT, "packaging", "kubernetes")

failures = []


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        m = re.search(r"project\(\s*brokerha\b[^)]*?\bVERSION\s+([0-9.]+)", f.read(), re.S)
    return m.group(1)


def renderings():
    """The base and every overlay directory (each holds a kustomization.yaml)."""
    dirs = [os.path.join(KUSTOMIZE_DIR, "base")]
    overlays = os.path.join(KUSTOMIZE_DIR, "overlays")
    for name in sorted(os.listdir(overlays)):
        if os.path.exists(os.path.join(overlays, name, "kustomization.yaml")):
            dirs.append(os.path.join(overlays, name))
    return dirs


def render(directory):
    r = subprocess.run(["kubectl", "kustomize", directory], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    check(r.returncode == 0, f"kubectl kustomize failed:\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def one(objects, kind, pred=lambda o: True, what=None):
    found = [o for o in objects if o["kind"] == kind and pred(o)]
    check(len(found) == 1, f"expected one {what or kind}, found {len(found)}")
    return found[0]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_number(container, port):
    """A probe's or Service's target port (a name or a number) as the container's number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise Failure(f"port {port!r} is not a container port")


def pod_environment(container, pod_name, pod_ip):
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            secret = e.get("valueFrom", {}).get("secretKeyRef")
            if secret is not None:
                # A Secret's value: a key as `openssl rand -hex 16` makes one.
                check(not secret.get("optional", False),
                      f"env {e['name']}: an optional Secret would let a pod run without it")
                env[e["name"]] = os.urandom(16).hex()
                continue
            field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            check(field in ("metadata.name", "status.podIP"),
                  f"env {e['name']}: unsupported valueFrom {e.get('valueFrom')}")
            env[e["name"]] = pod_name if field == "metadata.name" else pod_ip
    check(all(k.startswith("BROKER_") for k in env), f"env names outside BROKER_*: {list(env)}")
    return env


def make_certificate(directory):
    os.makedirs(directory, exist_ok=True)
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=brokerha.test", "-keyout",
                        os.path.join(directory, "tls.key"), "-out",
                        os.path.join(directory, "tls.crt")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    check(r.returncode == 0, f"openssl req failed: {r.stdout}")


def effective_config(server, config_text, env, mounts, work):
    """Runs --check-config as the pod would: config.yaml and the environment, with the paths of
    mounted volumes mapped into `work`. Returns the effective config as a dict."""
    config_dir = os.path.join(work, "config")
    os.makedirs(config_dir, exist_ok=True)
    config_path = os.path.join(config_dir, "config.yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(config_text)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    for key, value in env.items():
        for mount, local in mounts.items():
            if value == mount or value.startswith(mount + "/"):
                value = local + value[len(mount):]
        run_env[key] = value
    r = subprocess.run([server, "--config", config_path, "--check-config"], env=run_env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    check(r.returncode == 0, f"brokerha-server --check-config rejected the pod's config:\n{r.stderr}")
    check("config warning" not in r.stderr, f"--check-config warned:\n{r.stderr}")
    return yaml.safe_load(r.stdout)


def check_rendering(name, objects, server, version, work):
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    check(len(namespaces) == 1, f"expected one Namespace, found {len(namespaces)}")
    ns = namespaces[0]["metadata"]["name"]
    for o in objects:
        if o["kind"] != "Namespace":
            check(o["metadata"].get("namespace") == ns,
                  f"{o['kind']}/{o['metadata']['name']} is not in namespace {ns}")

    deploy = one(objects, "Deployment")
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    replicas = deploy["spec"]["replicas"]
    check(selects(deploy["spec"]["selector"]["matchLabels"], labels),
          "the Deployment's selector does not select its pods")
    check(spec.get("enableServiceLinks") is False, "enableServiceLinks is not false")
    check(spec.get("terminationGracePeriodSeconds", 30) >= 30,
          "terminationGracePeriodSeconds below 30 s")
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, "pods may run as root")
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    terms = [t.get("podAffinityTerm", t) for t in
             anti.get("preferredDuringSchedulingIgnoredDuringExecution", []) +
             anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
    check(any(t.get("topologyKey") == "kubernetes.io/hostname" and
              selects(t.get("labelSelector", {}).get("matchLabels", {}), labels) for t in terms),
          "no pod anti-affinity by kubernetes.io/hostname on the broker's own pods")

    check(len(spec["containers"]) == 1, "expected one container")
    c = spec["containers"][0]
    image, _, tag = c["image"].rpartition(":")
    check(tag == version, f"image tag {tag!r} is not the project version {version}")
    ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in c.get("ports", [])}
    for p in [(1883, "TCP"), (7946, "TCP"), (7946, "UDP"), (8080, "TCP")]:
        check(p in ports, f"container port {p[0]}/{p[1]} is missing")
    ready, live = c.get("readinessProbe", {}), c.get("livenessProbe", {})
    check(ready.get("httpGet", {}).get("path") == "/ready", "readiness probe is not GET /ready")
    check(live.get("httpGet", {}).get("path") == "/healthz", "liveness probe is not GET /healthz")
    probe_port = port_number(c, ready["httpGet"]["port"])
    check(port_number(c, live["httpGet"]["port"]) == probe_port, "probes on different ports")

    # Services.
    headless = one(objects, "Service", lambda o: o["spec"].get("clusterIP") == "None",
                   "headless Service")
    check(headless["spec"].get("publishNotReadyAddresses") is True,
          "the headless Service does not publish not-ready pods")
    check(selects(headless["spec"]["selector"], labels), "the headless Service selects no pods")
    hports = {(p["port"], p.get("protocol", "TCP")): p for p in headless["spec"]["ports"]}
    check(set(hports) == {(7946, "TCP"), (7946, "UDP")},
          f"headless Service ports {sorted(hports)}, expected 7946/TCP and 7946/UDP only")
    for p in hports.values():
        check(port_number(c, p.get("targetPort", p["port"])) == 7946,
              "headless Service targets a port other than 7946")
    lb = one(objects, "Service", lambda o: o["spec"].get("type") == "LoadBalancer",
             "LoadBalancer Service")
    check(selects(lb["spec"]["selector"], labels), "the MQTT Service selects no pods")
    lb_targets = {port_number(c, p.get("targetPort", p["port"])) for p in lb["spec"]["ports"]}
    check(1883 in lb_targets, "the MQTT Service does not reach port 1883")

    pdb = one(objects, "PodDisruptionBudget")
    check(selects(pdb["spec"]["selector"]["matchLabels"], labels), "the PDB selects no pods")
    if "maxUnavailable" in pdb["spec"]:
        check(0 < int(pdb["spec"]["maxUnavailable"]) < replicas, "PDB maxUnavailable out of range")
    else:
        check(0 < int(pdb["spec"]["minAvailable"]) < replicas, "PDB minAvailable out of range")

    # The config volume at /config comes from the rendered ConfigMap.
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    check("/config" in mounts, "nothing is mounted at /config")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    cm_name = volumes[mounts["/config"]].get("configMap", {}).get("name")
    cm = one(objects, "ConfigMap", lambda o: o["metadata"]["name"] == cm_name,
             f"ConfigMap {cm_name} (mounted at /config)")
    check("config.yaml" in cm.get("data", {}), f"ConfigMap {cm_name} has no config.yaml")

    # The configuration as the pod sees it.
    local_mounts = {"/config": os.path.join(work, "config")}
    for path, volume in mounts.items():
        if path == "/config":
            continue
        secret = volumes[volume].get("secret")
        check(secret is not None, f"volume {volume} at {path}: only Secrets are expected")
        local_mounts[path] = os.path.join(work, volume)
        make_certificate(local_mounts[path])
    env = pod_environment(c, "brokerha-7d4b9-x1x2y", "10.244.1.7")
    cfg = effective_config(server, cm["data"]["config.yaml"], env, local_mounts, work)
    # The server ignores BROKER_* variables that name no key (Kubernetes injects such), so a
    # misspelt one would pass --check-config silently: each must name a key.
    known = {"BROKER_" + k.upper().replace(".", "_") for k in config_keys(cfg)}
    for var in env:
        check(var in known, f"env {var} names no configuration key (ignored by the server)")
    check(cfg["api"]["port"] == probe_port, f"api.port {cfg['api']['port']} != probe port {probe_port}")
    check(cfg["mqtt"]["port"] == 1883, f"mqtt.port is {cfg['mqtt']['port']}")
    check(cfg["cluster"]["port"] == 7946, f"cluster.port is {cfg['cluster']['port']}")
    # The cluster is keyed, from a Secret: never insecure, never a key in the ConfigMap.
    check(cfg["cluster"]["config"]["secret_key"] == "<redacted>",
          "the pods run without cluster.config.secret_key")
    check(not cfg["cluster"]["insecure"], "the pods run with cluster.insecure")
    check("secret_key" not in cm["data"]["config.yaml"],
          "a secret key in the ConfigMap: take it from a Secret")
    check(cfg["cluster"]["expected_members"] == replicas,
          f"cluster.expected_members {cfg['cluster']['expected_members']} != replicas {replicas}")
    tcp_port_name = hports[(7946, "TCP")]["name"]
    srv = f"_{tcp_port_name}._tcp.{headless['metadata']['name']}.{ns}.svc.cluster.local"
    check(cfg["discovery"]["domain"] == srv,
          f"discovery.domain {cfg['discovery']['domain']!r}, the headless SRV name is {srv!r}")
    check(cfg["cluster"]["node_name"] == env.get("BROKER_CLUSTER_NODE_NAME"),
          "cluster.node_name is not the pod name")
    tls_port = cfg["mqtt"].get("tls", {}).get("port", 0)
    if tls_port:
        check((tls_port, "TCP") in ports, f"TLS port {tls_port} is not a container port")
        check(tls_port in lb_targets, f"the MQTT Service does not reach the TLS port {tls_port}")
    print(f"check-kubernetes: ok: {name}: {replicas} replicas in namespace {ns}, discovery {srv}, "
          f"MQTT {sorted(lb_targets)}, probes on {probe_port}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="a brokerha-server binary")
    args = parser.parse_args()
    if not os.access(args.server, os.X_OK):
        sys.exit(f"check-kubernetes: FAIL: {args.server} is not an executable brokerha-server "
                 "(run the `ci` stage first)")
    if shutil.which("kubectl") is None:
        sys.exit("check-kubernetes: FAIL: kubectl is not on PATH. The machine image carries it; "
                 "do not install Debian's kubernetes-client instead (it conflicts with that "
                 "package and its kustomize is old).")
    version = project_version()
    dirs = renderings()
    for directory in dirs:
        name = os.path.relpath(directory, KUSTOMIZE_DIR)
        work = tempfile.mkdtemp(prefix="brokerha-k8s.")
        try:
            check_rendering(name, render(directory), args.server, version, work)
        except Failure as e:
            failures.append(name)
            print(f"check-kubernetes: FAIL: {name}: {e}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"check-kubernetes: {len(failures)} of {len(dirs)} renderings failed")
        return 1
    print(f"check-kubernetes: all {len(dirs)} renderings passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
