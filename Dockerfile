# One image for every process of the engine: `crisis worker` (default), `crisis api`,
# `crisis sandbox`. See docker-compose.yml for how they are wired together.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs (no .venv, .git or local state): one COPY per package listed in
# pyproject.toml [tool.setuptools] packages, plus the playbooks, which are data, not a package.
COPY pyproject.toml README.md ./
COPY core ./core
COPY store ./store
COPY engine ./engine
COPY sandbox ./sandbox
COPY cli ./cli
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY playbooks ./playbooks

RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/crisis crisis \
    && mkdir -p /var/lib/crisis \
    && chown crisis:crisis /var/lib/crisis

# The installed package lives in site-packages, so the default playbooks directory (a sibling of
# the source tree) does not exist there: point at the copied playbooks. The data directory must
# be writable by the non-root user.
ENV CRISIS_PLAYBOOKS_DIR=/app/playbooks \
    CRISIS_DATA_DIR=/var/lib/crisis

USER crisis

EXPOSE 8000 8100

CMD ["crisis", "worker"]
