# detector-al: the Label Studio ML backend (`detector-al serve`) on port 9090.
#
#   docker build -t detector-al .                                   # CPU PyTorch (download.pytorch.org/whl/cpu)
#   docker build -t detector-al:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 .
#   docker build -t detector-al:cuda --build-arg TORCH_INDEX_URL= .  # PyPI's default build (CUDA, runs on CPU too)
#   docker run --rm -p 127.0.0.1:9090:9090 -v detector-al-models:/models \
#       -e LABEL_STUDIO_URL=http://<label-studio>:8080 -e LABEL_STUDIO_API_KEY=<personal access token> detector-al
#
# A CUDA image needs no CUDA base: PyTorch's CUDA wheels bring their CUDA libraries; the host needs the NVIDIA
# driver and the NVIDIA Container Toolkit (`docker run --gpus all ...`). README.md, "Run with Docker Compose".
# Layers go from the slowest to the most often changed: a change of code reinstalls only the project itself.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Where PyTorch comes from: the CPU wheels by default (about 1 GB less than PyPI's CUDA build), a CUDA index for a
# GPU image, or empty for PyPI (the versions pinned in constraints.txt either way).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# python3 -m venv: python:3.11-slim has it; a Debian base needs python3-venv (docker/make-local-base.sh adds it).
RUN python3 -m venv /opt/venv
WORKDIR /opt/detector-al

# 1. PyTorch and torchvision, the pair pinned in constraints.txt (torchvision's operators are checked: a torch
#    build that does not match fails here, not at the first prediction).
COPY constraints.txt ./
RUN set -eu; \
    torch=$(grep -E '^torch==' constraints.txt); vision=$(grep -E '^torchvision==' constraints.txt); \
    if [ -n "$TORCH_INDEX_URL" ]; then pip install -q --index-url "$TORCH_INDEX_URL" "$torch" "$vision"; \
    else pip install -q -c constraints.txt "$torch" "$vision"; fi; \
    python -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'CUDA', torch.version.cuda)"

# 2. The project's other dependencies (from pyproject.toml, pinned by constraints.txt; no extras: the server needs
#    neither Ray nor the test tools). OpenCV without GUI: ultralytics asks for opencv-python, which needs libGL; the
#    headless build (label-studio-sdk's) gives the same cv2 without it.
COPY pyproject.toml ./
RUN set -eu; \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt; \
    pip install -q -c constraints.txt -r /tmp/requirements.txt; \
    gui=$(pip show opencv-python 2>/dev/null | sed -n 's/^Version: //p'); \
    headless=$(pip show opencv-python-headless 2>/dev/null | sed -n 's/^Version: //p'); \
    if [ -n "$gui" ]; then \
        pip uninstall -q -y opencv-python; \
        pip install -q --no-deps --force-reinstall "opencv-python-headless==${headless:-$gui}"; \
    fi; \
    rm /tmp/requirements.txt; \
    YOLO_CONFIG_DIR=/tmp/yolo-check python -c "import cv2, ultralytics, label_studio_sdk, fastapi; print('cv2', cv2.__version__)"; \
    rm -rf /tmp/yolo-check

# 3. The project (no dependencies left to fetch), the shipped sample model (the default weights), the entrypoint.
COPY README.md ./
COPY detector_al ./detector_al
COPY ml_backend ./ml_backend
RUN pip install -q --no-deps . && rm -rf build detector_al.egg-info
COPY sample_data/model/best.pt sample_data/model/recipe.json /opt/detector-al/sample_model/
COPY docker/entrypoint.py /opt/detector-al/entrypoint.py

# Non-root. /models is the model folder (versions, the SQLite state with the training queue, the image cache):
# a volume, so retrained models and queued training jobs outlive the container.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /models && chown app:app /models
USER app
VOLUME ["/models"]

# The backend's settings are the environment variables of README.md ("The Label Studio ML backend"); the image sets
# only those whose value differs in a container. The others, with their defaults there:
#   LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY  required here (checked at start; see docker/entrypoint.py)
#   BASIC_AUTH_USER, BASIC_AUTH_PASS, SCORE_THRESHOLD, LABEL_MAPPING, STRATEGY, CEAL_DELTA0, CEAL_DECAY,
#   CEAL_MIN_CONFIDENCE, TRAIN_EVERY, TRAIN_EPOCHS, TRAIN_TIMEOUT_S, LOCAL_FILES_DOCUMENT_ROOT,
#   FETCH_CONNECT_TIMEOUT_S, FETCH_READ_TIMEOUT_S, FETCH_TIMEOUT_S, FETCH_MAX_BYTES, FETCH_ALLOW_PRIVATE,
#   IMAGE_CACHE_MAX_MB, MAX_IMAGE_DECODE_MB, QUEUE_BUDGET, QUEUE_COLD_START, QUEUE_REFRESH_DELAY_S
# and the container's own: PORT (9090), LABEL_STUDIO_WAIT_S (how long to wait for Label Studio at start, 120),
# DETECTOR_AL_PREFLIGHT (false: start without checking LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY).
# MODEL_PATH: the initial weights (here the sample-data model); mount yours and point MODEL_PATH at them.
# YOLO_OFFLINE: ultralytics sends no usage events and makes no online checks.
ENV MODEL_DIR=/models \
    MODEL_PATH=/opt/detector-al/sample_model/best.pt \
    PORT=9090 \
    HOME=/home/app \
    YOLO_CONFIG_DIR=/home/app/.config/Ultralytics \
    MPLCONFIGDIR=/home/app/.config/matplotlib \
    YOLO_OFFLINE=1
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=150s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '9090'), timeout=4)"]
# docker stop sends SIGTERM: the server finishes its requests and stops; a training job that was running or queued
# stays in MODEL_DIR's store and runs at the next start.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/opt/detector-al/entrypoint.py"]
CMD ["serve"]
