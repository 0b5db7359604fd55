"""``mailers serve``: the webhook service (Starlette on uvicorn) and its durable landing.

- :mod:`adapters.serve.app`: the routes and their status codes (``create_app``).
- :mod:`adapters.serve.lander`: group commit, the writer thread behind the ``Land`` port
  (:mod:`adapters.serve.landing_port`).
- :mod:`adapters.serve.segments`: local append-only segment files and crash recovery.
- :mod:`adapters.serve.s3_store`: S3 landing (local spool, closed segments uploaded whole).
- :mod:`adapters.serve.s3_mirror`: ``mirror_landing``, S3 into the local dir for ingestion.
- :mod:`adapters.serve.replay`: the replay guard all receiver processes share.
- :mod:`adapters.serve.embedded`: uvicorn in a thread (``EmbeddedServer``) or as the process.
"""
