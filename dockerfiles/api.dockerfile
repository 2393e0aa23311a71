# The prediction API: FastAPI + onnxruntime, no PyTorch. Multi-stage: the build stage makes a venv
# from the locked `serve` requirements; the runtime stage copies only that venv.
#
#   docker build -f dockerfiles/api.dockerfile -t hotdog-api .                 # model from gs://
#   docker build -f dockerfiles/api.dockerfile --target api-with-model -t hotdog-api:baked .
#
# The first reads HOTDOG_MODEL_URI (or Vertex's AIP_STORAGE_URI) at start; the second bakes
# models/export/model.int8.onnx and its sidecar into the image. The port comes from PORT (Cloud
# Run) or AIP_HTTP_PORT (Vertex AI), read by the service's settings: an exec-form command
# expands no variables.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILDER_IMAGE=${BASE_IMAGE}

FROM ${BUILDER_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
COPY requirements/serve.txt /tmp/serve.txt
# A network that intercepts TLS passes its CA as a build secret (never a layer):
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt ...
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/serve.txt
COPY pyproject.toml README.md /src/
COPY configs /src/configs
COPY hotdog /src/hotdog
# The project itself, without dependencies (all locked above); then pip leaves the venv.
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/venv/bin/pip install --no-deps /src \
    && /opt/venv/bin/pip uninstall -y pip setuptools
# Test suites and onnxruntime's model-conversion tools are never imported by the service: ~25 MB.
RUN find /opt/venv -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3.11/site-packages/onnxruntime/transformers \
        /opt/venv/lib/python3.11/site-packages/onnxruntime/quantization \
        /opt/venv/lib/python3.11/site-packages/onnxruntime/tools

FROM ${BASE_IMAGE} AS api-runtime
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOTDOG_HOST=0.0.0.0 \
    HOTDOG_PREDICTION_LOG=/tmp/hotdog/predictions
WORKDIR /app
# Any unprivileged id works; this one owns nothing in the image.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD ["python3", "-c", "import sys, urllib.request; from hotdog.serve.settings import Settings; urllib.request.urlopen(f'http://127.0.0.1:{Settings.from_env().port}/health', timeout=2)"]
CMD ["python3", "-m", "hotdog.serve"]

FROM api-runtime AS api-with-model
COPY models/export/model.int8.onnx models/export/model.int8.onnx.json /app/models/export/

# The default target: the model is named at start (HOTDOG_MODEL_URI or AIP_STORAGE_URI).
FROM api-runtime AS api
