# otel-mta sidecar image.
#   docker build -t otel-mta/otel-mta:0.1.0 .
# Runs as a non-root user and needs no writable root filesystem: everything it
# writes goes to OTEL_MTA_DATA_DIR (mount a volume there; the Helm chart mounts
# an emptyDir).

# Build stage: builds the wheel, with a compiler for otel-mta's C extension.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OTEL_MTA_DATA_DIR=/var/lib/otel-mta
COPY --from=build /wheels /wheels
# [top]: `kubectl exec ... -- otel-mta top` works in the container (the sidecar never loads it)
RUN pip install --no-cache-dir --disable-pip-version-check "$(echo /wheels/*.whl)[top]" \
 && rm -rf /wheels \
 && groupadd --system --gid 10001 otelmta \
 && useradd --system --uid 10001 --gid otelmta --home-dir /var/lib/otel-mta --shell /usr/sbin/nologin otelmta \
 && mkdir -p /var/lib/otel-mta \
 && chown otelmta:otelmta /var/lib/otel-mta

WORKDIR /var/lib/otel-mta
USER 10001:10001
VOLUME ["/var/lib/otel-mta"]
# remote log (UDP), GELF (UDP+TCP), events (HTTP), health (HTTP)
EXPOSE 31239/udp 12201/udp 12201/tcp 9477/tcp 9478/tcp
ENTRYPOINT ["otel-mta"]
CMD ["run"]
