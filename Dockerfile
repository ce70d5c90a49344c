# One image for every Fusion service: `fusion serve dispatcher|panel-worker|judge|gateway|activity`.
# Without the `local` extra: in a cluster the models are remote (OpenRouter, vLLM, Ollama, ...).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY services ./services
RUN pip install . && useradd --uid 10001 --no-create-home fusion
USER 10001
ENTRYPOINT ["fusion"]
CMD ["serve", "dispatcher"]
