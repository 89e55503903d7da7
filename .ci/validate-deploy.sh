#!/usr/bin/env bash
# Validate the deployment files offline: k8s/ manifests, Prometheus rules, systemd units,
# Dockerfile, and `wardgate check-config` on the config inside the ConfigMap.
#
#   .ci/validate-deploy.sh            (WARDGATE_BIN=path/to/wardgate, default target/debug/wardgate)
#
# Installs what it lacks, from package registries only, into a cache (idempotent: a second run
# installs nothing):
#   PyPI    kubernetes-validate==$KV_VERSION (ships the Kubernetes JSON schemas; validates offline)
#   Debian  prometheus, for promtool only: `apt-get download` + `dpkg-deb -x` into the cache, so
#           no Prometheus server is installed or started (it would take port 9090)
#   Debian  systemd (systemd-analyze), if missing
#   npm     dockerfile-utils@$DU_VERSION (Dockerfile linter), into the cache
# Kustomize rendering uses `kubectl kustomize` when kubectl is on PATH (it is on the project's
# machine image); otherwise .ci/deploy_checks.py --emulate-render assembles the resources and
# generated ConfigMaps itself.
# Every check prints a line; a failure does not stop the others; exit 1 if any failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${WARDGATE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/wardgate-ci}
WARDGATE_BIN=${WARDGATE_BIN:-target/debug/wardgate}
KV_VERSION=1.37.0
DU_VERSION=0.16.3
# Kubernetes versions to validate against: the oldest we support and the newest schemas shipped.
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.37.0"}
PY=${PYTHON:-python3}

START=$SECONDS
PASS=0
FAIL=0
FAILED=()
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

ok()   { PASS=$((PASS + 1)); echo "  ok    $*"; }
bad()  { FAIL=$((FAIL + 1)); FAILED+=("$*"); echo "  FAIL  $*"; }
step() { echo; echo "== $* =="; }
# run NAME CMD...: ok if CMD exits 0, else FAIL with its output.
run() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name"; printf '%s\n' "$out" | sed 's/^/        /' | tail -40; fi
}
# must_fail NAME CMD...: the negative checks; ok if CMD fails.
must_fail() {
  local name=$1; shift
  if "$@" >"$TMP/neg.out" 2>&1; then bad "$name (a broken input passed)"; sed 's/^/        /' "$TMP/neg.out" | tail -10
  else ok "$name"; fi
}

apt_updated=0
apt_get() {
  if [ "$apt_updated" = 0 ] && ! apt-cache show "$1" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
  fi
  apt_updated=1
}

# ------------------------------------------------------------------------------------------
step "tools"
mkdir -p "$CACHE"
if "$PY" -c "import kubernetes_validate, yaml, sys; from importlib.metadata import version; sys.exit(version('kubernetes-validate') != '$KV_VERSION')" 2>/dev/null; then
  echo "  have  kubernetes-validate $KV_VERSION"
else
  echo "  pip install kubernetes-validate==$KV_VERSION"
  "$PY" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" \
    || { echo "cannot install kubernetes-validate from PyPI" >&2; exit 1; }
fi
KV=("$PY" -m kubernetes_validate)

PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ]; then
  PROMTOOL="$CACHE/prometheus/usr/bin/promtool"
  if [ ! -x "$PROMTOOL" ]; then
    echo "  apt-get download prometheus (promtool only, extracted into $CACHE/prometheus)"
    apt_get prometheus
    rm -rf "$CACHE/prometheus" "$CACHE"/prometheus_*.deb
    (cd "$CACHE" && apt-get download prometheus >/dev/null 2>&1) \
      && dpkg-deb -x "$CACHE"/prometheus_*.deb "$CACHE/prometheus" && rm -f "$CACHE"/prometheus_*.deb \
      || { echo "cannot fetch Debian package prometheus" >&2; exit 1; }
  fi
fi
echo "  have  $("$PROMTOOL" --version 2>&1 | head -1)"

if ! command -v systemd-analyze >/dev/null; then
  echo "  apt-get install systemd"
  apt_get systemd
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null \
    || { echo "cannot install Debian package systemd" >&2; exit 1; }
fi
echo "  have  $(systemd-analyze --version | head -1)"

DU="$CACHE/npm/node_modules/.bin/dockerfile-utils"
if [ ! -x "$DU" ]; then
  echo "  npm install dockerfile-utils@$DU_VERSION (into $CACHE/npm)"
  npm install --no-audit --no-fund --silent --prefix "$CACHE/npm" "dockerfile-utils@$DU_VERSION" >/dev/null 2>&1 \
    || { echo "cannot install dockerfile-utils from npm" >&2; exit 1; }
fi
echo "  have  dockerfile-utils $DU_VERSION"

if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  KUSTOMIZE="kubectl kustomize"; echo "  have  $(kubectl version --client 2>/dev/null | grep -i kustomize)"
else
  KUSTOMIZE=""; echo "  no kubectl: rendering with deploy_checks.py --emulate-render"
fi
echo "  tools ready after $((SECONDS - START))s"

# ------------------------------------------------------------------------------------------
step "kustomize render"
R="$TMP/render"; mkdir -p "$R"
if [ -n "$KUSTOMIZE" ]; then
  run "render k8s (base)"                  sh -c "$KUSTOMIZE k8s > '$R/base.yaml'"
  run "render k8s/jobs"                    sh -c "$KUSTOMIZE k8s/jobs > '$R/jobs.yaml'"
  run "render k8s/monitoring"              sh -c "$KUSTOMIZE k8s/monitoring > '$R/monitoring.yaml'"
  run "render k8s/monitoring/operator"     sh -c "$KUSTOMIZE k8s/monitoring/operator > '$R/operator.yaml'"
  run "render k8s/monitoring/grafana"      sh -c "$KUSTOMIZE k8s/monitoring/grafana > '$R/grafana.yaml'"
else
  run "emulated render of k8s and k8s/jobs" "$PY" .ci/deploy_checks.py --emulate-render "$R"
  cp k8s/monitoring/operator/*.yaml "$R/" 2>/dev/null; rm -f "$R/kustomization.yaml"
fi
echo "  rendered: $(ls "$R" | tr '\n' ' ')"

# ------------------------------------------------------------------------------------------
step "Kubernetes schemas (kubernetes-validate $KV_VERSION, strict, offline)"
# Raw files too: catches a file that is valid only after kustomize patched it, and the files
# outside any kustomization (Secret template, examples).
mapfile -t RAW < <(find k8s -name '*.yaml' ! -name kustomization.yaml ! -path 'k8s/monitoring/*' | sort)
for v in $K8S_VERSIONS; do
  for f in "$R"/*.yaml "${RAW[@]}"; do
    case "$f" in "$R"/operator.yaml|"$R"/servicemonitor.yaml|"$R"/prometheusrule.yaml) continue ;; esac
    out=$("${KV[@]}" --strict --quiet -k "$v" "$f" 2>&1); rc=$?
    # Every resource must have a schema: an unknown kind only warns in kubernetes-validate.
    if [ $rc -eq 0 ] && ! grep -q "Couldn't find schema" <<<"$out"; then ok "k8s $v: ${f#"$TMP"/}"
    else bad "k8s $v: ${f#"$TMP"/}"; sed 's/^/        /' <<<"$out" | tail -10; fi
  done
done
# Negative checks: the validator must reject broken manifests (so a green run means something).
"$PY" - "$R/base.yaml" "$TMP" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
a = yaml.safe_load(yaml.safe_dump(dep)); a["spec"]["replicas"] = "two"
b = yaml.safe_load(yaml.safe_dump(dep)); b["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
c = yaml.safe_load(yaml.safe_dump(dep)); del c["spec"]["selector"]
for n, d in (("type", a), ("field", b), ("required", c)):
    yaml.safe_dump(d, open(f"{sys.argv[2]}/broken-{n}.yaml", "w"))
EOF
must_fail "schema rejects a wrong type (replicas: \"two\")"      "${KV[@]}" --strict --quiet "$TMP/broken-type.yaml"
must_fail "schema rejects an unknown field (readinesProbe)"      "${KV[@]}" --strict --quiet "$TMP/broken-field.yaml"
must_fail "schema rejects a missing required field (selector)"   "${KV[@]}" --strict --quiet "$TMP/broken-required.yaml"

# ------------------------------------------------------------------------------------------
step "Prometheus Operator objects (CRDs: no schema shipped; structure + promtool)"
"$PY" - k8s/monitoring/operator/servicemonitor.yaml k8s/monitoring/operator/prometheusrule.yaml "$TMP" <<'EOF' \
  && ok "ServiceMonitor/PrometheusRule structure" || bad "ServiceMonitor/PrometheusRule structure"
import sys, yaml
sm = yaml.safe_load(open(sys.argv[1])); pr = yaml.safe_load(open(sys.argv[2]))
assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor", "ServiceMonitor kind"
assert sm["spec"]["selector"]["matchLabels"] and sm["spec"]["endpoints"][0]["port"] == "admin", "ServiceMonitor port"
assert "track" in sm["spec"].get("podTargetLabels", []), "ServiceMonitor podTargetLabels track"
assert pr["apiVersion"] == "monitoring.coreos.com/v1" and pr["kind"] == "PrometheusRule", "PrometheusRule kind"
yaml.safe_dump(pr["spec"], open(sys.argv[3] + "/operator-rules.yaml", "w"))
EOF
run "PrometheusRule spec == monitoring/wardgate-rules.yaml" "$PY" .ci/gen-prometheusrule.py --check
run "promtool check rules (PrometheusRule spec)"           "$PROMTOOL" check rules "$TMP/operator-rules.yaml"

# ------------------------------------------------------------------------------------------
step "Prometheus rules (promtool)"
run "promtool check rules k8s/monitoring/wardgate-rules.yaml" "$PROMTOOL" check rules k8s/monitoring/wardgate-rules.yaml
run "promtool test rules (alert unit tests)"                  "$PROMTOOL" test rules k8s/monitoring/wardgate-rules.test.yaml
sed 's/sum by (track) (rate(wardgate_requests_total\[5m\]))$/sum by (track) (rate(wardgate_requests_total[5m])/' \
  k8s/monitoring/wardgate-rules.yaml > "$TMP/broken-rules.yaml"
must_fail "promtool rejects a broken expression" "$PROMTOOL" check rules "$TMP/broken-rules.yaml"
# The PromQL quoted in docs/runbook.md must parse too.
"$PY" - docs/runbook.md "$TMP/runbook-rules.yaml" <<'EOF'
import re, sys, yaml
text = open(sys.argv[1]).read()
exprs = [e.replace("\\|", "|") for e in re.findall(r"`((?:sum|histogram_quantile|max|count) [^`]*)`", text)]
exprs += [e.replace("\\|", "|") for e in re.findall(r"`((?:histogram_quantile|sum|max|count) ?\([^`]*)`", text)]
rules = [{"record": f"runbook:expr{i}", "expr": e} for i, e in enumerate(dict.fromkeys(exprs))]
assert len(rules) >= 8, f"only {len(rules)} PromQL expressions found in the runbook"
yaml.safe_dump({"groups": [{"name": "runbook", "rules": rules}]}, open(sys.argv[2], "w"))
EOF
run "PromQL in docs/runbook.md parses (promtool)" "$PROMTOOL" check rules "$TMP/runbook-rules.yaml"

# The Grafana dashboard: generated, its every expression parses (the metrics it names are
# checked against a live /metrics by tests/dashboard.rs).
run "dashboard == .ci/gen-dashboard.py's output" "$PY" .ci/gen-dashboard.py --check
run "dashboard JSON parses, panels have queries" "$PY" -c "
import json, sys
d = json.load(open('k8s/monitoring/grafana/wardgate.json'))
ts = [t for p in d['panels'] for t in p.get('targets', [])]
assert d['uid'] == 'wardgate' and len(ts) >= 20, len(ts)
assert all('\$track' in t['expr'] for t in ts), 'a query ignores the track variable'
"
"$PY" .ci/gen-dashboard.py --rules "$TMP/dashboard-rules.yaml"
run "PromQL of the dashboard parses (promtool)" "$PROMTOOL" check rules "$TMP/dashboard-rules.yaml"

# ------------------------------------------------------------------------------------------
step "consistency checks (.ci/deploy_checks.py)"
if "$PY" .ci/deploy_checks.py "$R" >"$TMP/checks.out" 2>&1; then
  ok "$(tail -1 "$TMP/checks.out")"
else
  grep -E 'FAIL|Error|error' "$TMP/checks.out" | sed 's/^/        /'
  bad "$(tail -1 "$TMP/checks.out")"
fi

# ------------------------------------------------------------------------------------------
step "systemd units (systemd-analyze verify)"
# verify refuses a unit whose ExecStart binary does not exist ("Command ... is not executable"),
# and wardgate is not installed on a CI machine. So verify copies in a temp dir whose
# /usr/local/bin/wardgate is replaced by a dummy executable there; nothing else is changed.
# verify exits 0 on unknown keys or bad values (it only logs them), so any output is a failure.
U="$TMP/units"; mkdir -p "$U"
printf '#!/bin/sh\nexit 0\n' > "$U/wardgate"; chmod +x "$U/wardgate"
for f in systemd/*.service systemd/*.timer; do sed "s#/usr/local/bin/wardgate#$U/wardgate#g" "$f" > "$U/$(basename "$f")"; done
verify() { local out; out=$(cd "$U" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$@" 2>&1); local rc=$?
           [ $rc -eq 0 ] && [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }; }
for f in "$U"/*.service "$U"/*.timer; do run "systemd-analyze verify $(basename "$f")" verify "./$(basename "$f")"; done
sed -e 's/^Restart=on-failure/Restrat=on-failure/' "$U/wardgate.service" > "$U/broken.service"
must_fail "verify rejects a misspelt directive" verify ./broken.service
sed -e 's/^TimeoutStopSec=.*/TimeoutStopSec=soon/' "$U/wardgate.service" > "$U/broken.service"
must_fail "verify rejects a bad value"          verify ./broken.service
rm -f "$U/broken.service"
run "wardgate.sysusers declares the user wardgate" grep -Eq '^u wardgate ' systemd/wardgate.sysusers
out=$(cd "$U" && systemd-analyze security --offline=yes --threshold=30 ./wardgate.service 2>&1 | tail -1)
if [[ $? -eq 0 ]]; then ok "systemd-analyze security: ${out#→ }"; else bad "systemd-analyze security above threshold: $out"; fi

# ------------------------------------------------------------------------------------------
step "Dockerfile"
run "dockerfile-utils lint Dockerfile" "$DU" lint Dockerfile
printf 'FROM debian:bookworm-slim\nRUNN true\n' > "$TMP/Dockerfile.broken"
must_fail "dockerfile-utils rejects an unknown instruction" "$DU" lint "$TMP/Dockerfile.broken"
"$PY" - <<'EOF' && ok "multi-stage: rust:1-bookworm builder, --locked, slim runtime, non-root, ca-certificates" \
  || bad "Dockerfile structure"
import re
s = open("Dockerfile").read()
froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", s, re.M)
assert len(froms) >= 2, froms
assert "rust:${RUST_VERSION}-bookworm" in froms[0][0] and re.search(r"^ARG RUST_VERSION=1$", s, re.M), froms[0]
assert froms[-1][0] in ("debian:bookworm-slim", "gcr.io/distroless/cc-debian12:nonroot"), froms[-1]
assert "cargo build --release --locked" in s
assert re.search(r"COPY --from=\S+ \S*wardgate /usr/local/bin/wardgate", s)
assert "ca-certificates" in s and re.search(r"^USER 10001", s, re.M)
assert re.search(r'^ENTRYPOINT \["/usr/local/bin/wardgate"\]', s, re.M)
di = open(".dockerignore").read().split()
assert "target" in di and ".git" in di
EOF

# ------------------------------------------------------------------------------------------
step "wardgate check-config on the config inside the ConfigMap ($WARDGATE_BIN)"
"$PY" - "$R/base.yaml" "$TMP/configmap-wardgate.toml" <<'EOF' || bad "extract wardgate.toml from the rendered ConfigMap"
import sys, yaml
cm = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"
          and d["metadata"]["name"].startswith("wardgate-config"))
open(sys.argv[2], "w").write(cm["data"]["wardgate.toml"])
EOF
if [ ! -x "$WARDGATE_BIN" ]; then
  bad "wardgate binary $WARDGATE_BIN not found: build it first (cargo build) or set WARDGATE_BIN"
elif ! "$WARDGATE_BIN" check-config --help >/dev/null 2>&1 || ! "$WARDGATE_BIN" --help 2>&1 | grep -q check-config; then
  bad "$WARDGATE_BIN has no 'check-config' subcommand yet"
else
  # Secrets come from the environment in k8s; check-config must not need them. The TLS pair is
  # the wardgate-tls Secret's volume in a pod (deploy_checks.py checks the paths against the
  # mount): here a throwaway self-signed pair stands in, given as WARDGATE_TLS_CERT/KEY.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -keyout "$TMP/tls.key" -out "$TMP/tls.crt" >/dev/null 2>&1 \
    || { echo "no openssl: placeholder files (check-config only checks that they exist)"; touch "$TMP/tls.crt" "$TMP/tls.key"; }
  out=$(env -u WARDGATE_REDIS_URL -u WARDGATE_MYSQL_URL -u WARDGATE_ADMIN_TOKEN \
        WARDGATE_TLS_CERT="$TMP/tls.crt" WARDGATE_TLS_KEY="$TMP/tls.key" \
        "$WARDGATE_BIN" check-config --config "$TMP/configmap-wardgate.toml" 2>&1); rc=$?
  if [ $rc -eq 0 ] && grep -q '0\.0\.0\.0:9090' <<<"$out" && grep -q '0\.0\.0\.0:8443' <<<"$out"; then
    ok "check-config accepts the ConfigMap's wardgate.toml (effective admin_listen 0.0.0.0:9090, tls.listen 0.0.0.0:8443)"
  else
    bad "check-config on the ConfigMap's wardgate.toml (exit $rc)"; sed 's/^/        /' <<<"$out" | tail -20
  fi
  run "check-config accepts config/wardgate.toml (the image's default)" "$WARDGATE_BIN" check-config --config config/wardgate.toml
  # Negative: a stub that accepts anything would pass the above.
  sed 's/^grace = .*/grace = "soon"/' "$TMP/configmap-wardgate.toml" > "$TMP/broken.toml"
  if out=$(WARDGATE_TLS_CERT="$TMP/tls.crt" WARDGATE_TLS_KEY="$TMP/tls.key" \
           "$WARDGATE_BIN" check-config --config "$TMP/broken.toml" 2>&1); then
    bad "check-config accepted drain.grace = \"soon\""
  elif grep -q grace <<<"$out"; then ok "check-config rejects drain.grace = \"soon\" and names the setting"
  else bad "check-config rejected drain.grace = \"soon\" without naming it: $out"; fi
fi

# ------------------------------------------------------------------------------------------
echo
echo "validate-deploy: $((SECONDS - START))s"
if [ "$FAIL" -gt 0 ]; then
  echo "failed:"; printf '  - %s\n' "${FAILED[@]}"
fi
echo "validate-deploy: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
