# The operator's image: built with cargo, run from a distroless non-root base.
# .github/workflows/release.yml builds it on a tag v* (linux/amd64 and linux/arm64) and pushes
# ghcr.io/<owner>/preview-operator:<version>. No Docker engine exists on our development
# machines, so it is kept deliberately plain. A fork building its own: tag it with the chart's
# appVersion, the tag the chart pulls by default:
#   docker build -t <registry>/preview-operator:<appVersion of charts/preview-operator/Chart.yaml> .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin preview-operator

# glibc, CA certificates and nothing else; uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/preview-operator /usr/local/bin/preview-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/preview-operator"]
CMD ["run"]
