"""The service on uvicorn: in a thread of this process (:class:`EmbeddedServer`, for the
demo, ``mailers dev`` and tests) or as the process itself (:func:`run`, ``mailers serve``).
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from adapters.serve.app import WEBHOOK_PATH, ServeStats, create_app
from mailers.config import Settings
from mailers.serve_config import ServeConfig

_START_TIMEOUT_SECONDS = 30.0


def uvicorn_config(app: object, serve: ServeConfig) -> uvicorn.Config:
    """uvicorn settings for the service: httptools and uvloop, one worker, no access log."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=serve.host,
        port=serve.port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
        log_level="warning",
    )


def run(settings: Settings, serve: ServeConfig | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM close the open segments on the way out)."""
    serve = serve or settings.config.serve
    uvicorn.Server(uvicorn_config(create_app(settings, serve=serve), serve)).run()


class EmbeddedServer:
    """The service for every account of a config, on ``host:port``, in a background thread.

    Segments are closed after every group commit (``segment_max_age_seconds: 0``) unless
    ``serve`` says otherwise, so what it acknowledged is at once visible to ingestion.
    """

    def __init__(
        self,
        settings: Settings,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        serve: ServeConfig | None = None,
    ) -> None:
        self.settings = settings
        self.serve = (
            serve or settings.config.serve.model_copy(update={"segment_max_age_seconds": 0.0})
        ).model_copy(update={"host": host, "port": port})
        self.app = create_app(settings, serve=self.serve)
        self.stats: ServeStats = self.app.state.stats
        self._socket = socket.create_server((host, port), family=_family(host))
        self._server = uvicorn.Server(uvicorn_config(self.app, self.serve))
        self._thread: threading.Thread | None = None

    @property
    def landed(self) -> int:
        return self.stats.landed

    @property
    def rejected(self) -> int:
        return self.stats.rejected

    @property
    def base_url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def url_for(self, workspace: str, account: str) -> str:
        """The URL to register at the provider for one account."""
        return self.base_url + WEBHOOK_PATH.format(workspace=workspace, account=account)

    def start(self) -> EmbeddedServer:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded webhook server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._socket.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
