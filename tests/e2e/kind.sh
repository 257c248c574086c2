#!/usr/bin/env bash
# End to end in a throw-away kind cluster, for machines with Docker, kind, kubectl and helm (not
# run by `cargo test`: no Docker engine runs on the development machines). It builds the image
# from the Dockerfile, installs the chart, and watches an in-cluster web server as a Portal:
#
#   1. the VoipCheck turns Ready and HotlineReportable=False (Healthy);
#   2. the web server is scaled to zero: WebReachable turns False and, the target being a
#      provider service and the failure on its side, HotlineReportable True with an incident;
#   3. scaled back up, the check is Ready again.
#
#   tests/e2e/kind.sh            # KEEP=1 leaves the cluster running afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster=voipcheck-e2e
image=voipcheck:e2e
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "kind.sh needs $tool" >&2; exit 2; }
done

kind create cluster --name "$cluster" --wait 2m
[ "${KEEP:-}" = 1 ] || trap 'kind delete cluster --name "$cluster"' EXIT
kubectl config use-context "kind-$cluster"

docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"
helm install voipcheck charts/voipcheck --namespace voipcheck --create-namespace \
    --set image.repository=voipcheck,image.tag=e2e,location=kind --wait --timeout 3m

kubectl create namespace e2e
kubectl -n e2e create deployment web --image=nginx:1.27-alpine --port=80
kubectl -n e2e expose deployment web --port=80
kubectl -n e2e rollout status deployment/web --timeout=2m
kubectl apply -f - <<'YAML'
apiVersion: voipcheck.io/v1alpha1
kind: VoipCheck
metadata:
  name: web
  namespace: e2e
spec:
  target: { kind: Portal, name: web.e2e.svc }
  interval: 5s
  timeout: 2s
  failureThreshold: 2
  http:
    - { name: web, url: "http://web.e2e.svc.cluster.local/", expectStatus: [200], bodyContains: nginx }
YAML

condition() { # name type status
    kubectl -n e2e wait "vc/$1" --for="condition=$2=$3" --timeout=2m
}

condition web Ready True
condition web HotlineReportable False
kubectl -n e2e get vc web -o wide

kubectl -n e2e scale deployment web --replicas=0
condition web WebReachable False
condition web HotlineReportable True
kubectl -n e2e get vc web -o jsonpath='{.status.incident}{"\n"}'

kubectl -n e2e scale deployment web --replicas=1
condition web Ready True
condition web HotlineReportable False

# The operator's own view: its metrics carry the check.
kubectl -n voipcheck port-forward svc/voipcheck 18080:8080 >/dev/null &
forward=$!
sleep 2
curl -fsS http://127.0.0.1:18080/metrics | grep 'voipcheck_hotline_reportable{.*name="web"'
kill "$forward"
echo "e2e: passed"
