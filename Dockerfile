FROM python:3.12-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY api api
COPY services services
COPY hub hub
COPY storage storage
COPY sql sql
COPY agent_mock agent_mock
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8080
CMD ["remotegpu", "serve", "--host", "0.0.0.0", "--port", "8080"]
