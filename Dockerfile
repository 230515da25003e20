FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY notifier ./notifier
COPY tasks ./tasks
COPY channels ./channels
COPY config ./config
COPY worker.py beat_schedule.py ./
RUN pip install --no-cache-dir .
USER nobody
