# Stand-in for prom/prometheus where no registry is reachable: Debian's prometheus binary (the
# build context holds it; .ci/docker.sh unpacks it from the package) laid out as the official
# image is (config at /etc/prometheus/prometheus.yml, data in /prometheus, user nobody, the same
# entrypoint and default flags), so docker-compose.yml runs it unchanged. Never published.
ARG DEBIAN_IMAGE=mltag-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
COPY prometheus /bin/prometheus
RUN mkdir -p /etc/prometheus /prometheus \
    && chown 65534:65534 /prometheus
USER 65534:65534
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
