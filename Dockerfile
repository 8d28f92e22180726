# SPDX-License-Identifier: Apache-2.0
# brokerha-server container image.
#
#   docker build -t brokerha .
#   docker run --rm -p 1883:1883 -p 8080:8080 brokerha
#
# Stage `build` (Debian 12) builds the `container` CMake preset (library + server, no tests)
# and installs it to /opt/brokerha; stage `runtime` (Debian 12 slim) copies the server from
# that install tree and runs it as an unprivileged user. The configuration is read from
# /config/config.yaml (Kubernetes mounts a ConfigMap there: packaging/kubernetes); every key can
# also be set with BROKER_* environment variables (docs/configuration.md).
#
# No Docker engine runs on the project's machines: scripts/test-container.sh (the `container`
# stage of scripts/test.sh) runs this file's install command into a scratch prefix, checks that
# the runtime stage's packages provide every library the server needs, and runs the installed
# server with --version and --check-config against packaging/docker/config.yaml.

ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libasio-dev libcpp-httplib-dev rapidjson-dev libyaml-cpp-dev libc-ares-dev libssl-dev \
      libmimalloc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake --preset container && cmake --build --preset container
RUN cmake --install build/container --prefix /opt/brokerha --strip

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libc-ares2 libcpp-httplib0.11 libyaml-cpp0.7 libssl3 libmimalloc2.0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 brokerha \
 && useradd --system --uid 10001 --gid brokerha --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin brokerha
COPY --from=build /opt/brokerha/bin/brokerha-server /usr/local/bin/brokerha-server
COPY --from=build /opt/brokerha/share/doc/brokerha /usr/share/doc/brokerha
COPY packaging/docker/config.yaml /config/config.yaml
USER 10001:10001
# MQTT, cluster membership + data plane (TCP and UDP on one port), HTTP API (probes, metrics).
EXPOSE 1883/tcp 7946/tcp 7946/udp 8080/tcp
# Without --config the server reads /config/config.yaml (docs/configuration.md); SIGTERM stops it
# gracefully (it runs as PID 1 and handles its signals itself).
ENTRYPOINT ["/usr/local/bin/brokerha-server"]
