# The repository's app as the OpenFactory platform runs it. Copy this file for your own
# app: change the COPY lines of your code and the app in CMD ("myapp:create_app()").
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=4000 \
    WEB_CONCURRENCY=2 \
    FLASK_CONFIG=production

WORKDIR /app
RUN useradd --create-home --uid 10001 app

# The package first (a layer that changes less often than the app)
COPY setup.cfg pyproject.toml README.md ./
COPY flask_openfactory ./flask_openfactory
RUN pip install --no-cache-dir . && rm -rf build

# The app
COPY config ./config
COPY demo ./demo
COPY wsgi.py ./

USER app
EXPOSE 4000

# Liveness only: /ofa/health never waits on Kafka (readiness is /ofa/ready).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ofa/health' % os.environ.get('PORT', '4000'), timeout=2)"]

# The extension's gunicorn hooks (start at boot, graceful stop, avail=UNAVAILABLE at exit);
# binds 0.0.0.0:$PORT. Its graceful_timeout (5 s) and the master's last publish fit the
# 10 s stop grace period of Docker and Swarm (SIGTERM, then SIGKILL).
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "python:flask_openfactory.gunicorn_conf", "wsgi:app"]
