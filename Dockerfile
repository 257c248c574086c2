# The voipcheck image: `voipcheck operator` by default (the Helm chart runs it so); any other
# subcommand as arguments, e.g. `docker run --rm IMAGE probe sip-options sip:example.net`.
#
#   docker build -t voipcheck .
#
# Two stages: the release binary is built with the locked dependencies on Debian bookworm and
# copied into distroless/cc-debian12, which has the same glibc, CA certificates (rustls reads
# the system's trust store) and nothing else: no shell, no package manager. tests/dockerfile.rs
# checks the binary path, the user and the entry point.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin voipcheck

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/voipcheck /usr/local/bin/voipcheck
# distroless' nonroot user; the chart's securityContext runs as the same uid.
USER 65532:65532
# /metrics, /healthz, /readyz (--metrics-addr).
EXPOSE 8080
ENTRYPOINT ["voipcheck"]
CMD ["operator"]
