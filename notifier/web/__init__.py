"""The operator's web app (FastAPI): the events API, provider webhooks, tracked links,
one-click unsubscribe, the dev outbox page, metrics and health. See `notifier.web.app`."""
