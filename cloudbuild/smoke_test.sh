#!/usr/bin/env bash
# Smoke-test an API image: start it, wait for /ready, classify a real photo, stop it.
#   cloudbuild/smoke_test.sh IMAGE PHOTO EXPECTED_LABEL [docker run options ...]
# Exits non-zero (and the image is not pushed) if the service does not get ready in 60 s or
# answers anything but the expected label. Used by Cloud Build and the GitHub workflow.
set -euo pipefail
image=$1 photo=$2 expected=$3
shift 3
port=${SMOKE_PORT:-8080}
container=$(docker run -d --rm -p "127.0.0.1:${port}:8080" -e PORT=8080 "$@" "$image")
trap 'docker logs "$container" 2>&1 | tail -20; docker rm -f "$container" >/dev/null' EXIT
for _ in $(seq 120); do
  if curl -fsS "http://127.0.0.1:${port}/ready" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fsS "http://127.0.0.1:${port}/ready"
echo
answer=$(curl -fsS -F "file=@${photo}" "http://127.0.0.1:${port}/predict")
echo "$answer"
label=$(printf '%s' "$answer" | python3 -c 'import json, sys; print(json.load(sys.stdin)["label"])')
if [[ $label != "$expected" ]]; then
  echo "smoke test failed: $photo was classified as $label, not $expected" >&2
  exit 1
fi
echo "smoke test passed: $image answers /ready and classifies $photo as $label"
