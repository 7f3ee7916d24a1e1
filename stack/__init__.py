"""The service's processes for tests and benchmarks: the API (gunicorn, or werkzeug in a thread), Celery
workers, scratch and throwaway databases, and waiting on a job. Nothing in core/, service/ or worker/
imports it; tests/ and bench/ both do, so neither copies the other's helpers."""
