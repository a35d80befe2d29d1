# The model image of deploy/kubernetes: one trained bundle at /bundle, and busybox's shell for the
# worker pod's `model` init container, which copies it into the pod. Build it with the bundle
# directory as the context, tagged with the bundle's version:
#   docker build -f deploy/kubernetes/model-image.Dockerfile \
#       -t REGISTRY/intentflow/model:VERSION models/bundles/VERSION
FROM busybox:1.37
COPY . /bundle
USER 10001
