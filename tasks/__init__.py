"""Celery tasks only: thin wrappers that parse arguments and call notifier/ functions."""
