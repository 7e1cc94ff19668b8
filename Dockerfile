# The base is an argument so that a machine without Docker Hub can build on a local
# image that has `python` and `pip` on PATH (bench/compose_run.sh makes one from
# Debian's python3.11); users keep the official slim image.
ARG BASE=python:3.11-slim
FROM ${BASE}

# Unbuffered, so `docker compose logs` shows progress as it happens rather
# than in 4 KiB blocks; no pip self-update check, since nothing may act on it.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, from pyproject.toml alone: TensorFlow is hundreds of MB,
# and this layer is then reused by every rebuild that only changes code.
# setuptools finds no packages yet, so this installs just the dependencies. The
# README (pyproject's readme) is an empty stand-in here, so that editing it does
# not throw this layer away; the real one comes with the code below.
COPY pyproject.toml ./
RUN touch README.md && pip install --no-cache-dir .

# --no-deps: the layer above already has them; pip always reinstalls a local
# directory, so this replaces the empty distribution with the real one.
COPY . .
RUN pip install --no-cache-dir --no-deps .

# Not root: a worker acts on whatever arrives on the broker, so a flaw in that
# path should not hand out root in the container. The home directory is the
# working directory because Keras writes ~/.keras and the SQLite defaults
# (no URLs set) write to the working directory.
RUN useradd --create-home --shell /usr/sbin/nologin seqsweep
USER seqsweep
WORKDIR /home/seqsweep

# Exec form keeps Python as PID 1, so SIGTERM from `docker stop` reaches
# Celery, which then finishes its running trials before it exits.
CMD ["python", "-m", "worker"]
