#!/usr/bin/env python3
"""Consistency checks of the deployment files that no schema can express.

Called by .ci/validate-deploy.sh as:
    deploy_checks.py RENDER_DIR
where RENDER_DIR holds base.yaml and jobs.yaml (kustomize output). Without kubectl the shell
script writes them with `deploy_checks.py --emulate-render RENDER_DIR`, which assembles the
resources the base kustomization lists and generates its ConfigMaps the way kustomize would
(for the checks here; only `kubectl kustomize` gives the exact hashed names).

Prints one line per check; exits 1 if any failed.
"""
from __future__ import annotations

import copy
import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
FAILED: list[str] = []
PASSED: list[str] = []
# Seconds a cloud load balancer may go on sending new connections to a terminating pod (health
# checks failing a node, target deregistration: 20-30 s); the pod must serve them, still ready,
# through preStop + drain.grace (docs/runbook.md, "Rollouts and the load balancer").
LB_DEREGISTRATION_S = 30


def check(name: str, ok: bool, detail: str = "") -> None:
    if ok:
        PASSED.append(name)
        print(f"  ok    {name}")
    else:
        FAILED.append(name)
        print(f"  FAIL  {name}{': ' + detail if detail else ''}")


def load_all(path: pathlib.Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def duration_s(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", text)
    if not m:
        raise ValueError(f"unparsable duration {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None


def pod_containers(doc: dict) -> list[dict]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def pod_spec(doc: dict) -> dict:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pod_labels(doc: dict) -> dict:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["metadata"].get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------
# Fallback renderer (no kubectl): enough of kustomize for the checks below.
def emulate_render(out: pathlib.Path) -> None:
    def build(kdir: pathlib.Path) -> list[dict]:
        kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        docs: list[dict] = []
        for res in kust.get("resources", []):
            p = kdir / res
            docs += build(p) if p.is_dir() else load_all(p)
        for gen in kust.get("configMapGenerator", []):
            data = {}
            for f in gen.get("files", []):
                key, _, src = f.partition("=") if "=" in f else (pathlib.Path(f).name, "", f)
                data[key] = (kdir / src).read_text()
            docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": gen["name"]}, "data": data})
        ns = kust.get("namespace")
        for d in docs:
            if ns and d["kind"] != "Namespace":
                d["metadata"]["namespace"] = ns
        images = {i["name"]: i for i in kust.get("images", [])}
        reps = {r["name"]: r["count"] for r in kust.get("replicas", [])}
        for d in docs:
            if d["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job"):
                for c in pod_containers(d):
                    name, _, tag = c["image"].partition(":")
                    if name in images:
                        im = images[name]
                        c["image"] = f'{im.get("newName", name)}:{im.get("newTag", tag or "latest")}'
            if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] in reps:
                d["spec"]["replicas"] = reps[d["metadata"]["name"]]
        return docs

    out.mkdir(parents=True, exist_ok=True)
    (out / "base.yaml").write_text(yaml.safe_dump_all(build(K8S), sort_keys=False))
    (out / "jobs.yaml").write_text(yaml.safe_dump_all(build(K8S / "jobs"), sort_keys=False))


# --------------------------------------------------------------------------------------------
def reference_keys(path: pathlib.Path) -> set[tuple[str, str]]:
    """(section, key) of every setting in the annotated reference, set or commented out."""
    keys = set()
    section = ""
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*#?\s*\[([a-z0-9_.]+)\]\s*$", line)
        if m:
            section = m.group(1)
            keys.add((section, None))
            continue
        m = re.match(r"^#?\s?([a-z_][a-z0-9_]*)\s*=", line)
        if m:
            keys.add((section, m.group(1)))
    return keys


def flat_keys(d: dict, prefix: str = "") -> set[tuple[str, str | None]]:
    """(section, key) of every setting; (section, None) for a table, so empty tables count too."""
    out = set()
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix == "rate_limit"):
            sub = f"{prefix}.{k}" if prefix else k
            out.add((sub, None))
            out |= flat_keys(v, sub)
        else:
            out.add((prefix, k))
    return out


def check_tls_mount(name: str, pod: dict, c: dict, cfg: dict) -> None:
    """tls.cert and tls.key lie in a directory mount (no subPath: the kubelet renews only those)
    of the kubernetes.io/tls Secret of secret-tls.example.yaml, under its keys."""
    tls = cfg.get("tls", {})
    secret = load_all(K8S / "secret-tls.example.yaml")[0]
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for setting, key in (("cert", "tls.crt"), ("key", "tls.key")):
        path = tls.get(setting, "")
        mount = next((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), {})
        vol = vols.get(mount.get("name"), {})
        check(f"{name}: tls.{setting} {path} is key {key} of Secret {secret['metadata']['name']}, "
              "mounted as a directory",
              vol.get("secret", {}).get("secretName") == secret["metadata"]["name"]
              and "subPath" not in mount and path == mount.get("mountPath", "").rstrip("/") + "/" + key
              and secret.get("type") == "kubernetes.io/tls"
              and key in set(secret.get("stringData", {})) | set(secret.get("data", {})),
              f"mount={mount} volume={vol}")


def main(render: pathlib.Path) -> int:
    base = load_all(render / "base.yaml")
    jobs = load_all(render / "jobs.yaml")
    toml_text = (K8S / "wardgate.toml").read_text()
    cfg = tomllib.loads(toml_text)
    ref = tomllib.loads((ROOT / "config/wardgate.toml").read_text())

    print("k8s/wardgate.toml vs the reference config/wardgate.toml")
    ref_keys = reference_keys(ROOT / "config/wardgate.toml")
    unknown = sorted(f"[{s}]" if k is None else f"{s}.{k}" if s else k
                     for s, k in flat_keys(cfg) if (s, k) not in ref_keys)
    check("every key of k8s/wardgate.toml exists in config/wardgate.toml", not unknown, ", ".join(unknown))
    check("admin_listen binds 0.0.0.0:9090 (probes, scraping)", cfg.get("admin_listen") == "0.0.0.0:9090",
          str(cfg.get("admin_listen")))
    check("no secrets in k8s/wardgate.toml (they come from the Secret)",
          not any(k in cfg for k in ("redis_url", "mysql_url", "admin_token")))

    print("ConfigMaps generated by kustomize")
    cms = [d for d in base if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("wardgate-config")]
    check("exactly one wardgate-config ConfigMap", len(cms) == 1, str(len(cms)))
    cm = cms[0] if cms else {"data": {}, "metadata": {"name": "?"}}
    check("wardgate-config has the single key wardgate.toml", list(cm.get("data", {})) == ["wardgate.toml"],
          str(list(cm.get("data", {}))))
    check("wardgate-config data equals k8s/wardgate.toml byte for byte",
          cm.get("data", {}).get("wardgate.toml") == toml_text)
    targets = find(base, "ConfigMap", "wardgate-warm-targets")
    check("wardgate-warm-targets has targets.csv (fixed name, used by jobs/)",
          targets is not None and list(targets.get("data", {})) == ["targets.csv"])
    if targets:
        bad = [l for l in targets["data"]["targets.csv"].splitlines()
               if l.strip() and not re.fullmatch(r"[A-Za-z .\-]{1,64},\d{1,6}(,\d+)?", l.strip())]
        check("targets.csv lines are state,assembly[,ward]", not bad, "; ".join(bad[:3]))

    print("Deployments")
    stable = find(base, "Deployment", "wardgate")
    canary = find(base, "Deployment", "wardgate-canary")
    check("Deployments wardgate and wardgate-canary exist", stable is not None and canary is not None)
    if not (stable and canary):
        return report()

    def normalised(dep: dict) -> dict:
        d = copy.deepcopy(dep)
        d["metadata"]["name"] = "X"
        d["spec"].pop("replicas", None)
        for where in (d["metadata"]["labels"], d["spec"]["selector"]["matchLabels"],
                      d["spec"]["template"]["metadata"]["labels"]):
            where.pop("track", None)
        for c in d["spec"]["template"]["spec"]["containers"]:
            c["image"] = "X"
        return d

    check("canary pod spec == stable pod spec (but name, track, replicas, image)",
          normalised(stable) == normalised(canary))
    check("stable has no replicas (HPA owns it)", "replicas" not in stable["spec"])
    check("canary has its own track label in selector and pods",
          canary["spec"]["selector"]["matchLabels"].get("track") == "canary"
          and stable["spec"]["selector"]["matchLabels"].get("track") == "stable")
    check("canary replicas set (0 = no canary)", isinstance(canary["spec"].get("replicas"), int))

    for dep in (stable, canary):
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        listen_port = int(cfg.get("listen", ref["listen"]).rsplit(":", 1)[1])
        admin_port = int(cfg["admin_listen"].rsplit(":", 1)[1])
        tls_port = int(cfg.get("tls", {}).get("listen", ":0").rsplit(":", 1)[1])
        check(f"{name}: container ports match listen/admin_listen/tls.listen",
              ports.get("http") == listen_port and ports.get("admin") == admin_port
              and ports.get("https") == tls_port, str(ports))
        check(f"{name}: liveness /healthz, readiness /readyz on the admin port",
              c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
              and c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"})
        args = c.get("args", [])
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        cfg_path = args[args.index("--config") + 1] if "--config" in args else None
        check(f"{name}: serve --config points at the mounted ConfigMap",
              args[:1] == ["serve"] and cfg_path in mounts
              and mounts[cfg_path].get("subPath") == "wardgate.toml", f"args={args}")
        vol = next((v for v in pod["volumes"] if v["name"] == mounts.get(cfg_path, {}).get("name")), {})
        check(f"{name}: config volume is the generated wardgate-config",
              vol.get("configMap", {}).get("name") == cm["metadata"]["name"])
        pre = c["lifecycle"]["preStop"]
        pre_s = float(pre["sleep"]["seconds"]) if "sleep" in pre else float(pre["exec"]["command"][-1])
        grace = duration_s(cfg.get("drain", {}).get("grace", ref["drain"]["grace"]))
        shut = duration_s(cfg.get("drain", {}).get("shutdown_timeout", ref["drain"]["shutdown_timeout"]))
        tgps = pod["terminationGracePeriodSeconds"]
        check(f"{name}: terminationGracePeriodSeconds {tgps} > preStop {pre_s:g} + grace {grace:g} + shutdown {shut:g}",
              tgps > pre_s + grace + shut)
        check(f"{name}: preStop {pre_s:g} + grace {grace:g} cover the LB's deregistration ({LB_DEREGISTRATION_S}s)",
              pre_s + grace >= LB_DEREGISTRATION_S)
        check_tls_mount(name, pod, c, cfg)
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        check(f"{name}: prometheus.io scrape annotations on the admin port",
              ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(admin_port))
        res = c.get("resources", {})
        check(f"{name}: cpu/memory requests and a memory limit",
              {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}))
        check(f"{name}: pod anti-affinity", "podAntiAffinity" in pod.get("affinity", {}))

    print("Security of every pod")
    workloads = [d for d in base + jobs if d["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job")]
    for w in workloads:
        ps = pod_spec(w)
        for c in pod_containers(w):
            sc = c.get("securityContext", {})
            psc = ps.get("securityContext", {})
            ok = ((sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) and sc.get("readOnlyRootFilesystem")
                  and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
                  and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault")
            check(f"{w['kind']}/{w['metadata']['name']}: non-root, read-only root fs, no escalation, caps dropped",
                  bool(ok))
            if "wardgate" in c["image"]:
                check(f"{w['kind']}/{w['metadata']['name']}: runs as uid 10001 like the image",
                      psc.get("runAsUser") == 10001)

    dockerfile = (ROOT / "Dockerfile").read_text()
    check("Dockerfile: final stage USER 10001", re.search(r"^USER 10001(:10001)?\s*$", dockerfile, re.M) is not None)

    print("Images")
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    jkust = yaml.safe_load((K8S / "jobs/kustomization.yaml").read_text())
    stable_tag = next(i["newTag"] for i in kust["images"] if i["name"] == "registry.example.org/wardgate/wardgate")
    job_tag = next(i["newTag"] for i in jkust["images"] if i["name"] == "registry.example.org/wardgate/wardgate")
    check(f"jobs/ image tag ({job_tag}) == base stable tag ({stable_tag})", job_tag == stable_tag)
    check("no placeholder image left after rendering",
          all("wardgate-canary-image" not in c["image"] for w in workloads for c in pod_containers(w)))

    print("Selectors, Secret keys, HPA, PDB, Services")
    secret = load_all(K8S / "secret.example.yaml")[0]
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for w in workloads:
        for c in pod_containers(w):
            for e in c.get("env", []):
                ref_ = e.get("valueFrom", {}).get("secretKeyRef")
                if ref_:
                    check(f"{w['metadata']['name']}: secret {ref_['name']}/{ref_['key']} is in secret.example.yaml",
                          ref_["name"] == secret["metadata"]["name"] and ref_["key"] in secret_keys)
    hpa = find(base, "HorizontalPodAutoscaler", "wardgate")
    check("HPA scales Deployment wardgate", hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "wardgate"
          and hpa["spec"]["minReplicas"] >= 2)
    pdb = find(base, "PodDisruptionBudget", "wardgate")
    check("PDB selects the stable pods only", pdb is not None
          and selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(stable))
          and not selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(canary)))
    pods = {d["metadata"]["name"]: pod_labels(d) for d in workloads}
    for svc, want in (("wardgate", {"wardgate", "wardgate-canary"}), ("wardgate-stable", {"wardgate"}),
                      ("wardgate-canary", {"wardgate-canary"}), ("wardgate-admin", {"wardgate", "wardgate-canary"}),
                      ("redis", {"redis"})):
        s = find(base, "Service", svc)
        got = {n for n, l in pods.items() if s and selects(s["spec"]["selector"], l)}
        check(f"Service {svc} selects {sorted(want)}", got == want, str(sorted(got)))
    lb = find(base, "Service", "wardgate") or {"spec": {"ports": []}}
    lb_ports = {p["port"]: p.get("targetPort") for p in lb["spec"]["ports"]}
    check("Service wardgate: 80 -> http (plain, for http:// apps) and 443 -> https (wardgate's TLS)",
          lb_ports == {80: "http", 443: "https"}, str(lb_ports))
    np = find(base, "NetworkPolicy", "wardgate")
    app_ports = {p.get("port") for r in (np or {}).get("spec", {}).get("ingress", []) if "from" not in r
                 for p in r.get("ports", [])}
    check("NetworkPolicy: http and https open to all", {"http", "https"} <= app_ports, str(app_ports))
    admin_rule = [r for r in (np or {}).get("spec", {}).get("ingress", [])
                  if any(p.get("port") in ("admin", 9090) for p in r.get("ports", []))]
    check("NetworkPolicy: admin port only from the monitoring namespace",
          len(admin_rule) == 1 and admin_rule[0].get("from") == [
              {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])

    print("Every manifest is used")
    listed = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        for r in k.get("resources", []):
            listed.add((kfile.parent / r).resolve())
        for g in k.get("configMapGenerator", []):
            for f in g.get("files", []):
                listed.add((kfile.parent / f.split("=")[-1]).resolve())
    allowed = {K8S / "secret.example.yaml", K8S / "secret-tls.example.yaml",
               K8S / "monitoring/wardgate-rules.test.yaml"}
    stray = [str(p.relative_to(ROOT)) for p in K8S.rglob("*")
             if p.is_file() and p.name != "kustomization.yaml" and p.resolve() not in listed
             and p not in allowed and "examples" not in p.parts]
    check("no file in k8s/ outside a kustomization (but secret templates, rule tests, examples/)", not stray,
          ", ".join(stray))

    print("systemd units")
    sysd = ROOT / "systemd"
    svc = (sysd / "wardgate.service").read_text()
    ref_grace = duration_s(ref["drain"]["grace"]) + duration_s(ref["drain"]["shutdown_timeout"])
    m = re.search(r"^TimeoutStopSec=(\S+)", svc, re.M)
    check(f"TimeoutStopSec > drain grace + shutdown_timeout ({ref_grace:g}s)",
          m is not None and duration_s(m.group(1)) > ref_grace, m.group(1) if m else "missing")
    for key in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "Restart=on-failure",
                "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                "ExecReload=/bin/kill -HUP $MAINPID", "EnvironmentFile="):
        check(f"wardgate.service has {key}", re.search(r"^" + re.escape(key), svc, re.M) is not None)
    check("wardgate.service runs as a dedicated or dynamic user",
          re.search(r"^(User=wardgate|DynamicUser=yes)", svc, re.M) is not None)
    check("wardgate.service sets LimitNOFILE >= 65536",
          (m := re.search(r"^LimitNOFILE=(\d+)", svc, re.M)) is not None and int(m.group(1)) >= 65536)
    execs = re.findall(r"^Exec\w+=(\S+)", svc + (sysd / "wardgate-warm.service").read_text(), re.M)
    check("units use /usr/local/bin/wardgate like the image",
          sorted(set(e for e in execs if "wardgate" in e)) == ["/usr/local/bin/wardgate"], str(execs))
    env_keys = set(re.findall(r"^#?([A-Z_]+)=", (sysd / "wardgate.env.example").read_text(), re.M))
    used = set(re.findall(r"\$\{?([A-Z_]+)\}?", (sysd / "wardgate-warm.service").read_text())) - {"MAINPID"}
    check("wardgate-warm.service variables are in wardgate.env.example", used <= env_keys, str(used - env_keys))
    return report()


def report() -> int:
    print(f"deploy_checks: {len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--emulate-render"]:
        emulate_render(pathlib.Path(sys.argv[2]))
        sys.exit(0)
    sys.exit(main(pathlib.Path(sys.argv[1])))
