# A model-only image: the artifact directory at /artifact, nothing else. Lets models ship on
# their own release cycle: Kubernetes copies it into the pod with an initContainer
# (k8s/components/artifact-from-image) and the service image stays the same.
#
#   docker build -f docker/artifact.Dockerfile --build-arg ARTIFACT=models/default \
#     -t mltag-artifact:1.0.0 .
#
# Expected size: busybox (~4.5 MB) + the artifact.

ARG BUSYBOX_IMAGE=busybox:1.37.0

FROM ${BUSYBOX_IMAGE}
ARG ARTIFACT=models/default
LABEL org.opencontainers.image.title="mltag-artifact" \
      org.opencontainers.image.description="An mltag model artifact (model.onnx + manifest.json + MODEL_CARD.md)"
COPY ${ARTIFACT} /artifact
USER 10001:10001
# The initContainer's command: copy the artifact into the shared volume at /models.
CMD ["cp", "-R", "/artifact", "/models/"]
