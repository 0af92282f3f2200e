# The orbit-persistence image: the CLI with the Kubernetes operator (`k8s operator`), as
# deploy/operator/20-deployment.yaml runs it.
#
#   docker build -t ghcr.io/orbit/orbit-persistence:0.1.0 .
#
# Build stage: the workspace's own toolchain version and its locked dependencies. The default
# backends are pure Rust (memory, cow_btree, lsm_tree); RocksDB (C++) is left out of the image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# No debug info in the image (the workspace's release profile keeps line tables for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked -p orbit-persistence-cli --features k8s \
 && install -D -m 0755 target/release/orbit-persistence /out/orbit-persistence

# Run stage: glibc and nothing else (no shell, no package manager), as the distroless
# "nonroot" user 65532, which the Deployment's securityContext also names.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/orbit-persistence /usr/local/bin/orbit-persistence
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/orbit-persistence"]
CMD ["k8s", "operator", "--probe-listen", "0.0.0.0:8080"]
