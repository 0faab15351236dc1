# replicator in a container: the daemon by default, any other subcommand as the command.
#
#   docker build -t replicator .
#   docker run -d --name replicator \
#     -v /srv/replicator/etc:/etc/replicator:ro \
#     -v replicator-journal:/var/lib/replicator \
#     replicator                                    # = replicator run
#   docker run ... replicator bridge                # the webhook bridge; set the health URL:
#     -e REPLICATOR_HEALTHZ_URL=http://127.0.0.1:9479/healthz
#   docker exec replicator replicator status --repository prod/app --image-tag v1
#
# The config is /etc/replicator/replicator.toml (mount the folder with its replication and
# policy files); the SQLite journal is /var/lib/replicator/journal.db, on the volume. To reach
# /metrics from outside, set [http] listen = "0.0.0.0:9478" and publish the port.

# The base of both stages, pinned by digest so two builds of one commit start from the same bytes
# (move it deliberately, as the lock: a new digest, then the image test). Both stages must use
# the same one: the venv links to the base's python. The suite builds this same file on a base
# made here from Debian's own packages (scripts/image.sh --debian-base: bookworm's python3,
# mmdebstrap), passing it as BASE, since the test machines reach no image registry.
ARG BASE=docker.io/library/python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16
FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Behind a TLS-inspecting proxy, name the CA bundle to trust (mount it with the build's -v):
#   --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt. Unset, pip uses its own.
ARG PIP_CERT
WORKDIR /src
# The same path as the systemd units' ExecStart; the runtime stage has the same Python there.
# requirements-image.lock is the lock's subset for the runtime and the ecr and postgres extras
# (a config may name auth = "ecr" or a PostgreSQL journal), every file checked by its sha256:
# two builds of one commit install the same code, whatever the index serves that day. The
# dependencies go first, in a layer of their own: a build whose lock did not change reuses it
# (`--layers`), so a change to the code reinstalls only the project.
COPY requirements-image.lock ./
RUN python -m venv /opt/replicator/venv \
    && /opt/replicator/venv/bin/pip install --no-cache-dir --require-hashes --no-deps \
       -r requirements-image.lock
# The project itself is built by the locked setuptools, its dependencies all from the lock.
COPY pyproject.toml README.md ./
COPY replicator ./replicator
RUN /opt/replicator/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/replicator/venv/bin/pip check

FROM ${BASE}
# A fixed, unprivileged id (numeric in USER, for runAsNonRoot): chown a bind-mounted journal
# folder to 10001 beforehand.
RUN groupadd --system --gid 10001 replicator \
    && useradd --system --uid 10001 --gid replicator --no-create-home \
       --home-dir /var/lib/replicator --shell /usr/sbin/nologin replicator \
    && install -d -o replicator -g replicator -m 0700 /var/lib/replicator \
    && install -d -m 0755 /etc/replicator
COPY --from=builder /opt/replicator/venv /opt/replicator/venv
ENV PATH=/opt/replicator/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REPLICATOR_CONFIG=/etc/replicator/replicator.toml \
    REPLICATOR_HEALTHZ_URL=http://127.0.0.1:9478/healthz
VOLUME ["/var/lib/replicator"]
WORKDIR /var/lib/replicator
USER 10001:10001
# 9478: /healthz /readyz /metrics /v1/replication-status; 9479: the bridge's webhooks.
EXPOSE 9478 9479
# No curl in the slim image: Python's urllib; any answer but 2xx, or none, is unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['REPLICATOR_HEALTHZ_URL'], timeout=4)"]
ENTRYPOINT ["replicator"]
CMD ["run"]
