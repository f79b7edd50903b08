"""
test_deploy.py — the deployment kit in deploy/ (issue 12, part 6), checked offline:

  - systemd: `systemd-analyze verify` accepts the units (one per part and d11.target) with
    no warning, and every part really signals readiness: with NOTIFY_SOCKET pointing at a
    datagram socket of this test, the center, each cell and the gateway send READY=1
    (sd_notify from libsystemd) once they serve;
  - Prometheus: `promtool check rules` and `promtool check config` accept
    deploy/prometheus, and `promtool test rules` runs the alert unit tests
    (alerts_test.yml: D11PartDown fires after 30 s of a part down, D11High5xxRatio, ...);
  - Grafana: the dashboard JSON parses, every panel has a PromQL target, and every metric
    it names exists in a real scrape of a running d11 after some orders;
  - Kubernetes: deploy/k8s/d11.yaml parses (python3 yaml) and has a StatefulSet per cell
    (with its --id and a data volume), the center StatefulSet, the gateway Deployment with
    /readyz and /healthz probes, a Service, an HPA on CPU 70% with 2..10 replicas and a
    PodDisruptionBudget — no cluster needed;
  - Kubernetes volumes: the center and every cell have a volumeClaimTemplate of their own
    (ReadWriteOnce, a size), mounted by the container, and the entry script links exactly
    that part's database (center.db, cell-N.db) onto it; every pod shares the one node
    directory of the Unix sockets (same hostPath, same --data, same nodeSelector); the
    PDB leaves room for a drain (minAvailable below the HPA minimum). The entry scripts
    are then RUN here (sh, paths mapped to temp dirs): a `d11 up` on the resulting data
    directory takes orders while the databases and their WAL files live on the "volumes",
    and a regular database file in the way makes the script refuse to start.
"""

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile

from harness import (REPO, Checks, Platform, Skip, new_key, poll, scaled, test_tmp, timeout)

DEPLOY = os.path.join(REPO, "deploy")


def _need(exe):
    p = shutil.which(exe)
    if not p:
        raise Skip("%s not installed (scripts/deps.sh)" % exe)
    return p


@timeout(60)
def test_systemd_units_verify_and_ready_notifications():
    with Checks() as ck:
        exe = shutil.which("systemd-analyze")
        if exe:
            d = tempfile.mkdtemp(dir=test_tmp())
            bin_path = os.environ.get("D11_BIN") or os.path.join(REPO, "bin", "d11")
            units = []
            for f in glob.glob(os.path.join(DEPLOY, "systemd", "*.service")) + \
                    glob.glob(os.path.join(DEPLOY, "systemd", "*.target")):
                with open(f) as src, open(os.path.join(d, os.path.basename(f)), "w") as dst:
                    dst.write(src.read().replace("/usr/local/bin/d11", bin_path))
                units.append(os.path.basename(f).replace("@.service", "@0.service"))
            ck.true(set(units) >= {"d11.target", "d11-center.service", "d11-gateway.service",
                                   "d11-cell@0.service"}, "one unit per part and a target: %r" % units)
            cp = subprocess.run([exe, "verify"] + units, cwd=d, capture_output=True, text=True, timeout=60)
            ck.true(cp.returncode == 0 and not (cp.stdout + cp.stderr).strip(),
                    "systemd-analyze verify: rc %d %s%s" % (cp.returncode, cp.stdout, cp.stderr))
            for u in glob.glob(os.path.join(DEPLOY, "systemd", "*.service")):
                ck.true("Type=notify" in open(u).read(), "%s is Type=notify" % u)
        # READY=1 from every part, through a socket of ours
        sock_path = os.path.join(tempfile.mkdtemp(prefix="n", dir="/tmp"), "notify")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(sock_path)
        s.settimeout(0.2)
        os.environ["NOTIFY_SOCKET"] = sock_path
        try:
            p = Platform(cells=2)
            with p:
                del os.environ["NOTIFY_SOCKET"]
                got = []

                def four():
                    try:
                        got.append(s.recv(4096).decode())
                    except socket.timeout:
                        pass
                    return len(got) >= 4 or None
                poll(four, scaled(10), "READY=1 from center, 2 cells, gateway")
                ck.true(all(m.startswith("READY=1") for m in got), "READY=1 messages: %r" % got)
                ck.true(sum("STATUS=serving HTTP" in m for m in got) == 1, "the gateway's: %r" % got)
                ck.true(sum("STATUS=recovered" in m for m in got) == 2, "the cells': %r" % got)
                p.stop()
        finally:
            os.environ.pop("NOTIFY_SOCKET", None)
            s.close()


@timeout(60)
def test_prometheus_rules_config_and_alert_unit_tests():
    promtool = _need("promtool")
    with Checks() as ck:
        pd = os.path.join(DEPLOY, "prometheus")
        for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                     ["test", "rules", "alerts_test.yml"]):
            cp = subprocess.run([promtool] + args, cwd=pd, capture_output=True, text=True, timeout=60)
            ck.true(cp.returncode == 0 and "SUCCESS" in cp.stdout,
                    "promtool %s: rc %d %s %s" % (" ".join(args), cp.returncode, cp.stdout, cp.stderr))


def _metric_names(expr):
    return set(re.findall(r"\b((?:d11|process)_[a-z0-9_]+)", expr))


@timeout(60)
def test_grafana_dashboard_names_real_metrics():
    with open(os.path.join(DEPLOY, "grafana", "d11-dashboard.json")) as f:
        dash = json.load(f)
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        ck.status(c.create_product("GRAF-1", stock=1), 201, "create")
        ck.status(c.order(1, [("GRAF-1", 1)], key=new_key()), 201, "order")
        ck.error(c.order(2, [("GRAF-1", 1)], key=new_key()), 409, "out_of_stock", what="sold out")
        text = c.get("/metrics", token=None).text
        have = set(re.findall(r"^([a-z_0-9]+)(?:\{| )", text, re.M))
        for fam, kind in re.findall(r"^# TYPE ([a-z_0-9]+) ([a-z]+)$", text, re.M):  # declared, maybe no sample yet
            have.add(fam)
            if kind == "histogram":
                have.update(fam + sfx for sfx in ("_bucket", "_sum", "_count"))
        ck.true(len(dash["panels"]) >= 12, "panels: %d" % len(dash["panels"]))
        for panel in dash["panels"]:
            ck.true(panel.get("title") and panel.get("targets"), "panel with a title and targets: %r" % panel)
            for t in panel.get("targets", []):
                for m in _metric_names(t["expr"]):
                    ck.true(m in have, "panel %r: metric %s is in a real scrape" % (panel["title"], m))
        titles = " ".join(pn["title"] for pn in dash["panels"]).lower()
        for want in ("stock available", "sell-through", "orders by outcome", "latency", "commit latency",
                     "batch size", "parked", "refusals by rule", "restarts"):
            ck.true(want in titles, "a panel for %r" % want)
        p.stop()


@timeout(30)
def test_kubernetes_manifests_offline():
    try:
        import yaml
    except ImportError:
        raise Skip("python3 yaml missing (scripts/deps.sh installs python3-yaml)")
    with open(os.path.join(DEPLOY, "k8s", "d11.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    with Checks() as ck:
        by = {}
        for d in docs:
            ck.true(d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"),
                    "apiVersion/kind/metadata.name: %r" % d)
            by.setdefault(d["kind"], []).append(d)
        conf = by["ConfigMap"][0]["data"]["d11.conf"]
        ncells = int(re.search(r"cells = (\d+)", conf).group(1))
        sts = {d["metadata"]["name"]: d for d in by.get("StatefulSet", [])}
        for i in range(ncells):
            s = sts.get("d11-cell-%d" % i)
            ck.true(s is not None, "a StatefulSet for cell %d" % i)
            if not s:
                continue
            spec = s["spec"]
            pod = spec["template"]["spec"]
            ctr = pod["containers"][0]
            ck.eq(spec["replicas"], 1, "cell %d: one replica" % i)
            ck.true(spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(),
                    "cell %d: selector matches the pod labels" % i)
            ck.eq(ctr["args"][:1] + ctr["args"][ctr["args"].index("--id"):][:2], ["cell", "--id", str(i)],
                  "cell %d runs `d11 cell --id %d`" % (i, i))
            vols = {v["name"] for v in pod["volumes"]}
            ck.true(any(m["mountPath"] == "/var/lib/d11" and m["name"] in vols for m in ctr["volumeMounts"]),
                    "cell %d mounts its data volume" % i)
            ck.true("readinessProbe" in ctr and "livenessProbe" in ctr, "cell %d probes" % i)
        ck.true("d11-center" in sts, "the center StatefulSet")
        gw = [d for d in by.get("Deployment", []) if d["metadata"]["name"] == "d11-gateway"]
        ck.eq(len(gw), 1, "the gateway Deployment")
        g = gw[0]["spec"]
        gc = g["template"]["spec"]["containers"][0]
        ck.eq(gc["readinessProbe"]["httpGet"]["path"], "/readyz", "readiness /readyz")
        ck.eq(gc["livenessProbe"]["httpGet"]["path"], "/healthz", "liveness /healthz")
        ck.true(gc["resources"]["requests"].get("cpu"), "CPU request (the HPA needs it)")
        svc = by["Service"][0]["spec"]
        ck.true(svc["selector"].items() <= g["template"]["metadata"]["labels"].items(), "Service selects gateways")
        hpa = by["HorizontalPodAutoscaler"][0]
        ck.eq(hpa["apiVersion"], "autoscaling/v2", "HPA v2")
        hs = hpa["spec"]
        ck.eq((hs["minReplicas"], hs["maxReplicas"]), (2, 10), "HPA 2..10")
        ck.eq(hs["scaleTargetRef"]["name"], "d11-gateway", "HPA scales the gateway")
        ck.eq(hs["metrics"][0]["resource"]["name"], "cpu", "on CPU")
        ck.eq(hs["metrics"][0]["resource"]["target"]["averageUtilization"], 70, "at 70%")
        pdb = by["PodDisruptionBudget"][0]["spec"]
        ck.true(pdb.get("minAvailable") or pdb.get("maxUnavailable") is not None, "PDB budget")
        ck.true(pdb["selector"]["matchLabels"].items() <= g["template"]["metadata"]["labels"].items(),
                "PDB selects the gateways")


def _k8s_docs():
    try:
        import yaml
    except ImportError:
        raise Skip("python3 yaml missing (scripts/deps.sh installs python3-yaml)")
    with open(os.path.join(DEPLOY, "k8s", "d11.yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


@timeout(60)
def test_kubernetes_per_part_volumes_and_entry_scripts():
    docs = _k8s_docs()
    by = {}
    for d in docs:
        by.setdefault(d["kind"], []).append(d)
    ncells = int(re.search(r"cells = (\d+)", by["ConfigMap"][0]["data"]["d11.conf"]).group(1))
    sts = {d["metadata"]["name"]: d for d in by.get("StatefulSet", [])}
    parts = [("d11-center", "center.db")] + [("d11-cell-%d" % i, "cell-%d.db" % i) for i in range(ncells)]
    gw = [d for d in by["Deployment"] if d["metadata"]["name"] == "d11-gateway"][0]
    with Checks() as ck:
        shared = set()
        for name, dbfile in parts + [("d11-gateway", None)]:
            obj = gw if dbfile is None else sts.get(name)
            ck.true(obj is not None, "%s is there" % name)
            if obj is None:
                continue
            pod = obj["spec"]["template"]["spec"]
            ctr = pod["containers"][0]
            data = ctr["args"][ctr["args"].index("--data") + 1]
            hp = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
            on = [m for m in ctr["volumeMounts"] if m["name"] in hp and m["mountPath"] == data]
            ck.eq(len(on), 1, "%s: --data %s is the node's shared directory (hostPath)" % (name, data))
            shared.update((hp[m["name"]], data, json.dumps(pod.get("nodeSelector"), sort_keys=True)) for m in on)
            if dbfile is None:
                ck.true("volumeClaimTemplates" not in obj["spec"], "the gateway keeps no volume of its own")
                continue
            vct = obj["spec"].get("volumeClaimTemplates") or []
            ck.eq(len(vct), 1, "%s: one volumeClaimTemplate" % name)
            if len(vct) != 1:
                continue
            v = vct[0]
            ck.eq(v["spec"]["accessModes"], ["ReadWriteOnce"], "%s: its volume is its own (RWO)" % name)
            ck.true(re.fullmatch(r"[0-9]+[GM]i", v["spec"]["resources"]["requests"]["storage"]),
                    "%s: a size for its volume" % name)
            mnt = [m["mountPath"] for m in ctr["volumeMounts"] if m["name"] == v["metadata"]["name"]]
            ck.eq(len(mnt), 1, "%s mounts its claim" % name)
            script = ctr["command"][2] if ctr.get("command", [None])[:2] == ["/bin/sh", "-c"] else ""
            ck.true(("ln -sfn %s/%s \"$db\"" % (mnt[0] if mnt else "?", dbfile)) in script and
                    ("db=%s/%s;" % (data, dbfile)) in script,
                    "%s: the entry script links %s/%s onto its volume: %r" % (name, data, dbfile, script))
        ck.eq(len(shared), 1, "one shared node directory, --data path and nodeSelector for all: %r" % shared)
        hpa = by["HorizontalPodAutoscaler"][0]["spec"]
        pdb = by["PodDisruptionBudget"][0]["spec"]
        ck.true(isinstance(pdb.get("minAvailable"), int) and 1 <= pdb["minAvailable"] < hpa["minReplicas"],
                "PDB minAvailable %r below the HPA minimum %d: a drain can move a gateway" %
                (pdb.get("minAvailable"), hpa["minReplicas"]))

        # run the entry scripts with the node's paths mapped to temp dirs
        root = tempfile.mkdtemp(dir=test_tmp())
        data = os.path.join(root, "node")
        os.makedirs(data)

        def entry(name, data_dir=data):
            ctr = sts[name]["spec"]["template"]["spec"]["containers"][0]
            vol = os.path.join(root, "pv-" + name)
            os.makedirs(vol, exist_ok=True)
            script = ctr["command"][2].replace("/var/lib/d11-db", vol).replace("/var/lib/d11", data_dir)
            return vol, subprocess.run(["/bin/sh", "-c", script, "d11"] + ctr["args"], capture_output=True,
                                       text=True, timeout=10, env=dict(os.environ, D11_BIN="true"))
        vols = {}
        for name, dbfile in parts:
            vols[name], cp = entry(name)
            ck.true(cp.returncode == 0, "%s entry script: rc %d %s" % (name, cp.returncode, cp.stderr))
            ck.true(os.path.islink(os.path.join(data, dbfile)), "%s: DATA/%s is a link" % (name, dbfile))
        with Platform(cells=ncells, data=data) as p:
            c = p.client()
            ck.status(c.create_product("K8S-1", stock=50), 201, "create on the linked layout")
            for u in range(6):
                ck.status(c.order(u + 1, [("K8S-1", 1)], key=new_key()), 201, "order %d" % u)
            poll(lambda: c.product("K8S-1").json.get("stock_sold") == 6 or None, scaled(10),
                 "6 units sold, as the center sees it")
            for name, dbfile in parts:
                on_vol = sorted(f for f in os.listdir(vols[name]) if f.startswith(dbfile))
                ck.true(dbfile in on_vol and dbfile + "-wal" in on_vol,
                        "%s: the database and its WAL are on the volume: %r" % (name, on_vol))
            ck.eq(sorted(f for f in os.listdir(data) if f.endswith((".db", ".db-wal", ".db-shm")) and not f.startswith("stats.db")
                         and not os.path.islink(os.path.join(data, f))), [],
                  "no database file left in the shared directory")
            p.stop()
        # a regular database file in the way (a data dir from before): refuse, keep it
        old = os.path.join(root, "old")
        os.makedirs(old)
        with open(os.path.join(old, "cell-0.db"), "w") as f:
            f.write("old data")
        _, cp = entry("d11-cell-0", data_dir=old)
        ck.true(cp.returncode == 1 and "regular file" in cp.stderr, "refused: rc %d %r" % (cp.returncode, cp.stderr))
        ck.true(not os.path.islink(os.path.join(old, "cell-0.db")), "the old file kept")
