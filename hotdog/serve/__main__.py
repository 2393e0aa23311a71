"""Start the service: ``python -m hotdog.serve [--model URI] [--port N] ...``.

Options override the HOTDOG_* environment variables (see ``hotdog.serve.settings``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from hotdog.core.cli import positive_int
from hotdog.core.errors import exit_on_user_error, silence_gcsfs_failures
from hotdog.monitor.prediction_log import PredictionLogSettings
from hotdog.serve.settings import ENV_PREFIX, Settings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hotdog.serve", description=__doc__)
    parser.add_argument("--model", dest="model_uri", help="path or gs:// URI of the model")
    parser.add_argument("--backend", choices=["onnx", "torch"])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, help="0 for any free port")
    parser.add_argument("--threads", type=positive_int)
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = str(value)

    with exit_on_user_error():
        settings = Settings.from_env()
        prediction_log = PredictionLogSettings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    silence_gcsfs_failures()  # hotdog.serve.model_store says why a gs:// model cannot be read

    import uvicorn

    from hotdog.serve.app import create_app

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    config = uvicorn.Config(
        create_app(settings, on_load_failure=stop, prediction_log=prediction_log),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # On SIGTERM uvicorn stops accepting and lets requests in flight finish this long.
        timeout_graceful_shutdown=round(settings.shutdown_grace_s),
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then raises it again under the handler that was
    # there before; with this one the process exits 0 (a clean stop, as platforms expect).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    if failure:
        print(f"error: {failure[0]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
