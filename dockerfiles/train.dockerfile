# Training: the same image on a laptop and on Vertex AI. Hydra overrides are the arguments:
#
#   docker build -f dockerfiles/train.dockerfile -t hotdog-train .
#   docker run --rm hotdog-train model=efficientnet_lite0 optimizer=adam     # the embedded sample
#   docker run --rm -v "$PWD/data/raw:/data:ro" -v "$PWD/runs:/app/runs" hotdog-train \
#       data=hotdog data.root=/data
#
# PyTorch comes from the package index by default (its CUDA build, which also runs on CPUs).
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gives the CPU-only build (~5 GB smaller);
# the versions are pyproject.toml's either way. Everything else is requirements/train.txt.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILDER_IMAGE=${BASE_IMAGE}

FROM ${BUILDER_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
# Only the file that pins PyTorch: the large layer below is rebuilt when the pins change.
COPY pyproject.toml /src/
# A network that intercepts TLS passes its CA as a build secret (never a layer):
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt ...
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && if [ -n "${TORCH_INDEX_URL:-}" ]; then \
        set -- --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple; fi \
    && python3 -c "import tomllib; \
        train = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['optional-dependencies']['train']; \
        print('\n'.join(d for d in train if d.split('==')[0] in ('torch', 'torchvision')))" \
        > /tmp/torch.txt \
    && /opt/venv/bin/pip install "$@" -r /tmp/torch.txt
COPY requirements/train.txt /tmp/train.txt
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/train.txt
COPY README.md /src/
COPY configs /src/configs
COPY hotdog /src/hotdog
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/venv/bin/pip install --no-deps /src \
    && /opt/venv/bin/pip uninstall -y pip

FROM ${BASE_IMAGE} AS train
COPY --from=build /opt/venv /opt/venv
# The small sample of real photos, so the image trains out of the box (data.root's default).
COPY data/sample /app/data/sample
# Run folders land in /app/runs (mount a volume there to keep them); caches go to /tmp.
RUN mkdir -p /app/runs && chown 10001:10001 /app/runs
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOTDOG_ROOT=/app \
    HOTDOG_CACHE_DIR=/tmp/hotdog-cache \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python3", "-m", "hotdog.train"]
