"""The multi-process deployment of docs/deploy.md (PostgreSQL, Redis, Celery workers, the daemon and
the webserver on one machine). Needs the `distributed` extra; nothing here is imported by the
code location itself."""
