"""The Celery worker edge: the worker's app and its one task (claim, run, finish a job)."""
