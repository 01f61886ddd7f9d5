"""Read by plain ``gunicorn wsgi:app``: the extension's hooks and defaults."""

from flask_openfactory.gunicorn_conf import (  # noqa: F401  (gunicorn reads these names)
    bind,
    graceful_timeout,
    keepalive,
    limit_request_field_size,
    limit_request_fields,
    limit_request_line,
    logconfig_dict,
    on_exit,
    post_worker_init,
    threads,
    worker_class,
    worker_exit,
)
