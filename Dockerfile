# custody in a container: built from this repository, run as an unprivileged user, with the
# audit log, its keys and checkpoints on a volume.
#
#   docker build -t custody .
#   docker run --rm -p 127.0.0.1:8080:8080 -v custody-data:/var/lib/custody \
#     -v "$PWD/custody.toml:/etc/custody/custody.toml:ro" custody
#
# compose.yaml runs it with an example MCP upstream (docs/deploy.md).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked --bin custody \
 && install -m 0755 target/release/custody /usr/local/bin/custody

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 custody \
 && useradd --system --uid 10001 --gid custody --home-dir /var/lib/custody --shell /usr/sbin/nologin custody \
 && mkdir -p /var/lib/custody /var/lib/custody-keys /etc/custody \
 && chown custody:custody /var/lib/custody /var/lib/custody-keys \
 && chmod 0700 /var/lib/custody /var/lib/custody-keys
COPY --from=build /usr/local/bin/custody /usr/local/bin/custody
USER custody:custody
WORKDIR /var/lib/custody
# The log (log.sqlite), the log key, the masking key and checkpoints.jsonl: back this up.
VOLUME ["/var/lib/custody"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/custody"]
CMD ["serve", "--config", "/etc/custody/custody.toml"]
