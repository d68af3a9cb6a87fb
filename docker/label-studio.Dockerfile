# Label Studio for machines that cannot pull heartexlabs/label-studio (the image users normally run, and what
# docker-compose.yml names by default): the same version from PyPI on the backend's base, with the same layout
# (port 8080, data in /label-studio/data, user 1001). tests/integration/test_docker.py builds it:
#   docker build -f docker/label-studio.Dockerfile -t detector-al/label-studio:1.23.2 \
#       --build-arg BASE_IMAGE=local/python:3.11-slim .
# then runs docker-compose.yml with LABEL_STUDIO_IMAGE=detector-al/label-studio:1.23.2
# (docker/compose.local.yml has the build section that lets compose build it itself).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG LABEL_STUDIO_VERSION=1.23.2
ENV PATH=/opt/label-studio/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data
RUN python3 -m venv /opt/label-studio \
    && pip install -q "label-studio==${LABEL_STUDIO_VERSION}" \
    && python -c "import importlib.metadata as m; print('label-studio', m.version('label-studio'))"
RUN useradd --uid 1001 --user-group --create-home --home-dir /home/labelstudio --shell /usr/sbin/nologin labelstudio \
    && mkdir -p /label-studio/data /label-studio/files \
    && chown -R labelstudio:labelstudio /label-studio
USER labelstudio
WORKDIR /label-studio
VOLUME ["/label-studio/data"]
EXPOSE 8080
# `docker stop` / `docker compose down`: Label Studio's server (Django's runserver, the container's PID 1) ends on
# SIGINT at once (exit 0); SIGTERM it ignores, so the stop would wait out the grace period (30 s) and kill it.
STOPSIGNAL SIGINT
CMD ["label-studio", "start", "--internal-host", "0.0.0.0", "--port", "8080", "--no-browser"]
