"""Settings, Celery configuration and routing rules."""
