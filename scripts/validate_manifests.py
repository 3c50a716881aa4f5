#!/usr/bin/env python3
"""Offline validation of deploy/: the Kubernetes manifests, the gateway config they carry
and the Grafana dashboard. No cluster, no kubectl, no kustomize binary.

    .venv/bin/python scripts/validate_manifests.py [path/to/inferplane]

1. Renders every kustomization (deploy/kubernetes/base and each overlay) with the small
   renderer below. It implements exactly the kustomize fields the manifests use, and
   refuses any other: `resources` (files and directories), `components`,
   `configMapGenerator` (files only, create/replace/merge, always with
   disableNameSuffixHash: it does not compute kustomize's name hash), `namespace` and
   `images`. There are no patches: rendering is concatenation, the ConfigMap generator,
   then setting the namespace and the image.
2. Validates every rendered object with kubernetes-validate (the JSON schemas it bundles,
   strict: unknown fields are errors) for KUBERNETES_VERSION. Custom resources (the
   Prometheus Operator's ServiceMonitor) have no bundled schema: they are skipped by
   kubernetes-validate, saying so, and checked by hand instead (apiVersion, kind,
   metadata.name, spec.selector, spec.endpoints naming a Service port).
3. Checks what the schemas cannot: the Service, PodDisruptionBudget and ServiceMonitor
   select the gateway's pods; probes and ports agree with the config's listen address;
   terminationGracePeriodSeconds exceeds [server] shutdown_delay + shutdown_grace; the
   Roles grant what [discovery.kubernetes] needs (and no Secret access outside the
   engine-api-keys component); [shared] redis names a Service of the render; the redis
   component's gateway.toml is the base's plus [shared] only; overlays put every
   namespaced object in a namespace; every component is used by some overlay (so each is
   rendered and validated here).
4. yamllint over deploy/ with the committed .yamllint.
5. deploy/grafana/inferplane.json parses, and every metric it queries is one the gateway
   exports (names read from the gateway's telemetry source, with the suffixes Prometheus
   gives each type: counters `_total`, histograms `_bucket`/`_sum`/`_count`).
6. Each distinct gateway.toml in the rendered ConfigMaps passes
   `inferplane serve --check --config FILE` when the binary is there (built with the
   `kubernetes` feature, as the image is).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

# The oldest release the manifests target: lifecycle.preStop.sleep is not used, and
# everything used is GA by 1.30. kubernetes-validate bundles schemas for 1.25 up.
KUBERNETES_VERSION = "1.30.0"

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "inferplane.json"
TELEMETRY = ROOT / "crates" / "inferplane-gateway" / "src" / "telemetry"

# Kinds without a schema in kubernetes-validate (custom resources), checked by hand.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
GATEWAY_LABELS = {"app.kubernetes.io/name": "inferplane", "app.kubernetes.io/component": "gateway"}

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}")


# ---------------------------------------------------------------- rendering


class RenderError(Exception):
    pass


KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "components", "configMapGenerator",
                        "namespace", "images"}
COMPONENT_FIELDS = {"apiVersion", "kind", "resources", "components", "configMapGenerator"}


def load_kustomization(directory: Path) -> dict:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    return yaml.safe_load(path.read_text())


def load_documents(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: a document without apiVersion/kind")
        d.setdefault("metadata", {})
    return docs


def key_of(obj: dict) -> tuple:
    m = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], m.get("namespace"), m.get("name"))


def accumulate(directory: Path, k: dict, objects: list[dict], allowed: set[str],
               used_components: set[Path]) -> None:
    unknown = set(k) - allowed
    if unknown:
        raise RenderError(f"{directory}: the renderer does not implement {sorted(unknown)}")
    for r in k.get("resources", []):
        target = (directory / r).resolve()
        if target.is_dir():
            objects.extend(render(target, used_components))
        else:
            objects.extend(load_documents(target))
    for c in k.get("components", []):
        target = (directory / c).resolve()
        used_components.add(target)
        ck = load_kustomization(target)
        if ck.get("kind") != "Component":
            raise RenderError(f"{target}: listed under components but kind is {ck.get('kind')}")
        accumulate(target, ck, objects, COMPONENT_FIELDS, used_components)
    for gen in k.get("configMapGenerator", []):
        generate_configmap(directory, gen, objects)


def render(directory: Path, used_components: set[Path]) -> list[dict]:
    """The objects `kustomize build directory` would print (for the fields used here)."""
    k = load_kustomization(directory)
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{directory}: kind {k.get('kind')} cannot be built on its own")
    objects: list[dict] = []
    accumulate(directory, k, objects, KUSTOMIZATION_FIELDS, used_components)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        set_image(objects, image)
    seen = set()
    for obj in objects:
        if key_of(obj) in seen:
            raise RenderError(f"{directory}: {key_of(obj)} appears twice")
        seen.add(key_of(obj))
    return objects


def generate_configmap(directory: Path, gen: dict, objects: list[dict]) -> None:
    unknown = set(gen) - {"name", "files", "behavior", "options"}
    if unknown:
        raise RenderError(f"{directory}: configMapGenerator field(s) {sorted(unknown)} not implemented")
    options = gen.get("options", {})
    if set(options) - {"disableNameSuffixHash", "labels"}:
        raise RenderError(f"{directory}: configMapGenerator options {sorted(options)} not implemented")
    if options.get("disableNameSuffixHash") is not True:
        raise RenderError(f"{directory}: configMapGenerator {gen['name']}: the renderer needs "
                          "disableNameSuffixHash: true (it does not compute kustomize's hash)")
    data = {}
    for f in gen.get("files", []):
        key, _, rel = f.partition("=") if "=" in f else (Path(f).name, "", f)
        data[key] = (directory / rel).read_text()
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": gen["name"], **({"labels": dict(options["labels"])}
                                               if "labels" in options else {})},
          "data": data}
    behavior = gen.get("behavior", "create")
    existing = [o for o in objects if o["kind"] == "ConfigMap"
                and o["metadata"].get("name") == gen["name"]]
    if behavior == "create":
        if existing:
            raise RenderError(f"{directory}: ConfigMap {gen['name']} exists; use behavior replace/merge")
        objects.append(cm)
    elif behavior in ("replace", "merge"):
        if len(existing) != 1:
            raise RenderError(f"{directory}: behavior {behavior} but no ConfigMap {gen['name']} to change")
        if behavior == "replace":
            existing[0]["data"] = data
        else:
            existing[0].setdefault("data", {}).update(data)
        if "labels" in options:
            existing[0]["metadata"].setdefault("labels", {}).update(options["labels"])
    else:
        raise RenderError(f"{directory}: unknown behavior {behavior}")


def set_image(objects: list[dict], image: dict) -> None:
    def new_ref(ref: str) -> str | None:
        name = re.split(r"[@]", ref)[0]
        name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        if name != image["name"]:
            return None
        out = image.get("newName", name)
        if "digest" in image:
            return f"{out}@{image['digest']}"
        tag = image.get("newTag")
        if tag is None:
            tail = ref[len(name):]
            return out + tail
        return f"{out}:{tag}"

    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            ref = new_ref(c.get("image", ""))
            if ref is not None:
                c["image"] = ref


# ---------------------------------------------------------------- checks on objects


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def duration(text: str) -> float:
    """A humantime duration as the gateway's config takes it ("500ms", "5s", "2m30s")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"not a duration this check reads: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def hand_check_crd(where: str, obj: dict, objects: list[dict]) -> None:
    """What a ServiceMonitor must have to scrape the gateway (no bundled schema)."""
    if obj.get("apiVersion") != "monitoring.coreos.com/v1" or obj.get("kind") != "ServiceMonitor":
        fail(where, "unexpected custom resource")
        return
    name = obj.get("metadata", {}).get("name")
    if not name or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        fail(where, f"metadata.name {name!r} is not a DNS label")
    spec = obj.get("spec", {})
    sel = spec.get("selector", {}).get("matchLabels", {})
    services = [s for s in by_kind(objects, "Service") if selects(sel, s["metadata"].get("labels", {}))]
    if not services:
        fail(where, "spec.selector.matchLabels selects no Service of the render")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        fail(where, "spec.endpoints must be a non-empty list")
        return
    for e in endpoints:
        ports = {p.get("name") for s in services for p in s["spec"].get("ports", [])}
        if e.get("port") not in ports:
            fail(where, f"endpoint port {e.get('port')!r} is not a port name of the selected Service")
        if e.get("honorLabels") is not True:
            fail(where, "honorLabels: true is needed: the gateway's `instance` label names the engine")
        if e.get("path", "/metrics") != "/metrics":
            fail(where, f"endpoint path {e.get('path')!r}: the gateway serves /metrics")
        for k in ("interval", "scrapeTimeout"):
            if k in e:
                duration(e[k])


def gateway_config(objects: list[dict], deployment: dict) -> tuple[str, dict] | None:
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    args = container.get("args", [])
    if "--config" not in args:
        return None
    path = Path(args[args.index("--config") + 1])
    mount = next((m for m in container.get("volumeMounts", [])
                  if path.parent == Path(m["mountPath"])), None)
    if mount is None:
        return None
    volume = next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), None)
    if volume is None or "configMap" not in volume:
        return None
    cms = [c for c in by_kind(objects, "ConfigMap")
           if c["metadata"]["name"] == volume["configMap"]["name"]]
    if len(cms) != 1 or path.name not in cms[0].get("data", {}):
        return None
    text = cms[0]["data"][path.name]
    return text, tomllib.loads(text)


def check_render(name: str, objects: list[dict], is_overlay: bool) -> list[str]:
    """Consistency checks; returns the gateway TOML texts found."""
    tomls = []
    deployments = [d for d in by_kind(objects, "Deployment")
                   if d["spec"]["template"]["metadata"].get("labels", {}).get(
                       "app.kubernetes.io/component") == "gateway"]
    if len(deployments) != 1:
        fail(name, f"expected one gateway Deployment, found {len(deployments)}")
        return tomls
    dep = deployments[0]
    where = f"{name}: Deployment/{dep['metadata']['name']}"
    pod = dep["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    if not selects(dep["spec"]["selector"]["matchLabels"], labels):
        fail(where, "spec.selector does not select its own pod template")
    if dep["spec"].get("replicas", 1) < 2:
        fail(where, "fewer than 2 replicas")
    spec = pod["spec"]
    container = spec["containers"][0]
    sc = container.get("securityContext", {})
    if not (spec.get("securityContext", {}).get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        fail(where, "needs runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, drop ALL")
    res = container.get("resources", {})
    if not (res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory")
            and res.get("limits", {}).get("memory")):
        fail(where, "needs cpu/memory requests and a memory limit")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    probes = {k: container.get(k, {}).get("httpGet", {})
              for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    if probes["livenessProbe"].get("path") != "/health":
        fail(where, "livenessProbe must be GET /health")
    if probes["readinessProbe"].get("path") != "/ready":
        fail(where, "readinessProbe must be GET /ready")
    for k, p in probes.items():
        if p.get("port") not in ports and p.get("port") not in ports.values():
            fail(where, f"{k} port {p.get('port')!r} is not a container port")
    env = {e["name"]: e for e in container.get("env", [])}
    ref = env.get("INFERPLANE_ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if not ref or ref.get("optional") is not True:
        fail(where, "INFERPLANE_ADMIN_TOKEN must come from an optional secretKeyRef")
    if env.get("HOSTNAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail(where, "HOSTNAME (the [shared] replica_id) must be the pod's name")
    if spec.get("enableServiceLinks") is not False:
        fail(where, "enableServiceLinks must be false: the Service inferplane would inject "
                    "INFERPLANE_* variables, the gateway's own settings namespace")
    sa = spec.get("serviceAccountName")
    if not any(s["metadata"]["name"] == sa for s in by_kind(objects, "ServiceAccount")):
        fail(where, f"serviceAccountName {sa!r} is not in the render")

    found = gateway_config(objects, dep)
    if found is None:
        fail(where, "--config does not name a file of a mounted ConfigMap of the render")
        return tomls
    text, cfg = found
    tomls.append(text)
    server = cfg.get("server", {})
    listen_port = int(server.get("listen", "127.0.0.1:8080").rsplit(":", 1)[1])
    if not server.get("listen", "").startswith(("0.0.0.0:", "[::]:")):
        fail(where, f"[server] listen {server.get('listen')!r} is not reachable from outside the pod")
    if ports.get("http") != listen_port:
        fail(where, f"container port http {ports.get('http')} != [server] listen port {listen_port}")
    delay = duration(server.get("shutdown_delay", "5s"))
    grace = duration(server.get("shutdown_grace", "30s"))
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if not tgps > delay + grace:
        fail(where, f"terminationGracePeriodSeconds {tgps} must exceed shutdown_delay {delay}s "
                    f"+ shutdown_grace {grace}s")

    # the Service, PDB and ServiceMonitor reach the gateway's pods on the right port
    services = [s for s in by_kind(objects, "Service") if selects(s["spec"].get("selector", {}), labels)]
    if len(services) != 1:
        fail(name, f"expected one Service selecting the gateway pods, found {len(services)}")
    for s in services:
        for p in s["spec"]["ports"]:
            if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                fail(f"{name}: Service/{s['metadata']['name']}", f"targetPort {p.get('targetPort')!r} "
                     "is not a gateway container port")
    pdbs = [p for p in by_kind(objects, "PodDisruptionBudget")
            if selects(p["spec"]["selector"].get("matchLabels", {}), labels)]
    if len(pdbs) != 1:
        fail(name, f"expected one PodDisruptionBudget for the gateway pods, found {len(pdbs)}")

    # RBAC: what discovery needs, bound to the gateway's ServiceAccount, and nothing more
    granted: set[tuple[str, str, str]] = set()
    for rb in by_kind(objects, "RoleBinding"):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa
                   for s in rb.get("subjects", [])):
            continue
        roles = [r for r in by_kind(objects, "Role") if r["metadata"]["name"] == rb["roleRef"]["name"]]
        if rb["roleRef"]["kind"] != "Role" or len(roles) != 1:
            fail(f"{name}: RoleBinding/{rb['metadata']['name']}", "roleRef names no Role of the render")
            continue
        for rule in roles[0].get("rules", []):
            for g in rule.get("apiGroups", []):
                for r in rule.get("resources", []):
                    for v in rule.get("verbs", []):
                        granted.add((g, r, v))
    if by_kind(objects, "ClusterRole") or by_kind(objects, "ClusterRoleBinding"):
        fail(name, "cluster-wide RBAC: discovery needs only a namespaced Role")
    if any(v == "*" or r == "*" for _, r, v in granted):
        fail(name, "a wildcard in the gateway's Roles")
    disc = cfg.get("discovery", {}).get("kubernetes")
    if disc is not None:
        need = {("", "pods", "get")}
        if "service" in disc:
            need |= {("discovery.k8s.io", "endpointslices", "list"),
                     ("discovery.k8s.io", "endpointslices", "watch")}
        if "selector" in disc:
            need |= {("", "pods", "list"), ("", "pods", "watch")}
        for g, r, v in sorted(need - granted):
            fail(name, f"[discovery.kubernetes] needs `{v}` on {g or 'core'}/{r}; no Role grants it")
    secret_grants = {v for g, r, v in granted if r == "secrets"}
    if secret_grants - {"get"}:
        fail(name, f"the gateway may {sorted(secret_grants)} Secrets: only get is ever needed")
    has_keys_role = any(r["metadata"]["name"] == "inferplane-engine-api-keys" for r in by_kind(objects, "Role"))
    if secret_grants and not has_keys_role:
        fail(name, "Secret access outside the engine-api-keys component")

    redis = cfg.get("shared", {}).get("redis")
    if redis is not None:
        host = re.match(r"redis://(?:[^@/]*@)?([^:/]+)", redis)
        if not host or not any(s["metadata"]["name"] == host.group(1) for s in by_kind(objects, "Service")):
            fail(name, f"[shared] redis {redis!r} names no Service of the render")

    if is_overlay:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED and not obj["metadata"].get("namespace"):
                fail(name, f"{obj['kind']}/{obj['metadata'].get('name')} has no namespace")
    return tomls


# ---------------------------------------------------------------- dashboard


def exported_metrics() -> set[str]:
    """Every sample name the gateway exposes, from its telemetry source: each
    `register("name", ...)` call, typed by the field it registers."""
    names: set[str] = set()
    suffixes = {"Counter": ["_total"], "FloatCounter": ["_total"], "Gauge": [""],
                "FloatGauge": [""], "Histogram": ["_bucket", "_sum", "_count"]}
    for src in sorted(TELEMETRY.glob("*.rs")):
        text = src.read_text()
        fields: dict[str, set[str]] = {}
        for field, ty in re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?(\w+):\s*(.+),\s*$", text, re.M):
            inner = re.fullmatch(r"Family<[^,]+,\s*(\w+)(?:,.*)?>", ty.strip())
            kind = inner.group(1) if inner else ty.strip()
            if kind in suffixes:
                fields.setdefault(field, set()).add(kind)
        for metric, field in re.findall(
                r'register\(\s*"(inferplane_[a-z0-9_]+)",\s*"[^"]*",\s*(?:t|self)\.(\w+)\.clone\(\)', text):
            kinds = fields.get(field, set())
            if len(kinds) != 1:
                raise SystemExit(f"{src}: cannot tell the type of {metric} (field {field}: {kinds})")
            kind = kinds.pop()
            names.update(metric + s for s in suffixes[kind])
    if len(names) < 20:
        raise SystemExit(f"only {len(names)} metric names found in {TELEMETRY}: the parser is stale")
    return names


def check_dashboard() -> None:
    where = str(DASHBOARD.relative_to(ROOT))
    try:
        board = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        fail(where, f"not JSON: {e}")
        return
    exported = exported_metrics()
    panels = [p for p in board.get("panels", []) if p.get("type") != "row"]
    if not panels:
        fail(where, "no panels")
    ids = [p.get("id") for p in board.get("panels", [])]
    if len(ids) != len(set(ids)):
        fail(where, "panel ids are not unique")
    queried: set[str] = set()
    for p in panels:
        targets = p.get("targets", [])
        if not targets:
            fail(where, f"panel {p.get('title')!r} has no query")
        for t in targets:
            names = set(re.findall(r"\binferplane_[a-z0-9_]+", t.get("expr", "")))
            if not names:
                fail(where, f"panel {p.get('title')!r}: a query of no gateway metric")
            for n in sorted(names - exported):
                fail(where, f"panel {p.get('title')!r} queries {n}, which the gateway does not export")
            queried |= names
    for v in board.get("templating", {}).get("list", []):
        for n in sorted(set(re.findall(r"\binferplane_[a-z0-9_]+", json.dumps(v.get("query", "")))) - exported):
            fail(where, f"variable {v.get('name')!r} queries {n}, which the gateway does not export")
    print(f"ok   dashboard: {len(panels)} panels, {len(queried)} metric names, all exported "
          f"(of {len(exported)} the gateway has)")


# ---------------------------------------------------------------- gateway config


def check_toml(binary: Path, text: str, label: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gateway.toml"
        path.write_text(text)
        run = subprocess.run([str(binary), "serve", "--check", "--config", str(path)],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "RUST_BACKTRACE": "0", "HOSTNAME": "check"})
        if run.returncode == 0:
            print(f"ok   {label}: {run.stdout.strip()}")
        else:
            fail(label, "inferplane serve --check failed:\n" + run.stderr.strip())


# ---------------------------------------------------------------- main


def main() -> int:
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "release" / "inferplane"
    builds = [KUBE / "base"] + sorted(p.parent for p in (KUBE / "overlays").glob("*/kustomization.yaml"))
    used: set[Path] = set()
    tomls: dict[str, str] = {}
    validated = skipped = 0
    for b in builds:
        name = str(b.relative_to(ROOT))
        try:
            objects = render(b, used)
        except (RenderError, OSError, yaml.YAMLError) as e:
            fail(name, f"cannot render: {e}")
            continue
        for obj in objects:
            where = f"{name}: {obj['kind']}/{obj['metadata'].get('name')}"
            if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
                print(f"skip {where}: custom resource, no schema bundled in kubernetes-validate "
                      "(checked by hand)")
                hand_check_crd(where, obj, objects)
                skipped += 1
                continue
            try:
                kubernetes_validate.validate(copy.deepcopy(obj), KUBERNETES_VERSION, strict=True)
                validated += 1
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(where, f"schema (Kubernetes {KUBERNETES_VERSION}): {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                fail(where, e.message)
        for text in check_render(name, objects, is_overlay=b != KUBE / "base"):
            tomls.setdefault(text, name)
        print(f"ok   {name}: {len(objects)} objects rendered")
    for c in sorted(p.parent for p in (KUBE / "components").glob("*/kustomization.yaml")):
        if c.resolve() not in used:
            fail(str(c.relative_to(ROOT)), "no overlay uses this component, so nothing validates it")
    print(f"ok   kubernetes-validate {kubernetes_validate.__version__}: {validated} objects valid "
          f"against Kubernetes {KUBERNETES_VERSION} (strict), {skipped} custom resources hand-checked")

    base = (KUBE / "base" / "gateway.toml").read_text()
    redis = (KUBE / "components" / "redis" / "gateway.toml").read_text()
    if not redis.startswith(base) or set(tomllib.loads(redis[len(base):])) != {"shared"}:
        fail("components/redis/gateway.toml", "must be base/gateway.toml plus a [shared] section only")

    lint = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint"),
                           str(DEPLOY)], capture_output=True, text=True)
    if lint.returncode != 0:
        fail("yamllint", "\n" + (lint.stdout + lint.stderr).strip())
    else:
        print("ok   yamllint --strict deploy/")

    check_dashboard()

    if binary.is_file() and os.access(binary, os.X_OK):
        for text, name in tomls.items():
            check_toml(binary, text, f"{name}: gateway.toml")
    else:
        print(f"skip inferplane serve --check: no binary at {binary} (cargo build --release)")

    if failures:
        print(f"deploy/ manifests: {len(failures)} check(s) failed")
        return 1
    print("deploy/ manifests: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
