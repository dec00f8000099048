"""`mltag-serve`: flags mirror the settings (each also an `MLTAG_*` environment variable)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import typing
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mltag_artifact import ArtifactError
from mltag_artifact.runner import ModelLoadError

from .logs import configure_logging
from .settings import Settings
from .state import ServiceState
from .tuning import tune_malloc

if TYPE_CHECKING:
    from .http import HttpLimits
    from .inference.registry import Loaded

log = logging.getLogger("mltag.serve")

DESCRIPTION = """\
Serve an mltag artifact (model.onnx + manifest.json) over HTTP: POST /tag, GET /labels,
/livez, /readyz, /metrics, and the KServe v2 protocol under /v2.

Every option can also be set as an environment variable: --max-batch-size 32 is
MLTAG_MAX_BATCH_SIZE=32. Flags win over the environment.
"""


def _add_setting(parser: argparse.ArgumentParser, name: str, field: Any) -> None:
    flag = "--" + name.replace("_", "-")
    env = "MLTAG_" + name.upper()
    default = field.default
    help_text = f"{field.description or ''} [env {env}; default {default!r}]".strip()
    annotation = field.annotation
    if annotation is bool:
        parser.add_argument(
            flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
        return
    kwargs: dict[str, Any] = {"default": None, "help": help_text, "metavar": name.upper()}
    if typing.get_origin(annotation) is typing.Literal:
        kwargs["choices"] = list(typing.get_args(annotation))
        kwargs.pop("metavar")
    elif typing.get_origin(annotation) is list:
        kwargs["nargs"] = "+"
        kwargs["help"] = help_text.replace("[env", "[space-separated; env (JSON list)")
    elif typing.get_origin(annotation) is dict:
        kwargs["type"] = json.loads
        kwargs["help"] = help_text.replace("[env", "[JSON object; env")
    parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mltag-serve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, field in Settings.model_fields.items():
        _add_setting(parser, name, field)
    return parser


def settings_from_args(argv: list[str] | None) -> Settings:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**overrides)


def http_limits(settings: Settings) -> HttpLimits:
    from .http import HttpLimits

    return HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_header_line_bytes=settings.max_header_line_bytes,
        header_timeout_s=settings.header_timeout_s,
        max_connections=settings.max_connections,
    )


def _serve(settings: Settings, loaded: list[Loaded]) -> int:
    import uvicorn

    from .app import create_app
    from .drain import DrainingServer
    from .http import coalescing_protocol

    state = ServiceState(settings=settings)

    config = uvicorn.Config(
        create_app(settings, loaded, state),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # The drain already waited for accepted requests (up to drain_timeout_s); whatever is
        # still running after that gets one more second, then a JSON 503.
        timeout_graceful_shutdown=1,
        server_header=False,
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]  # float ok
        http=coalescing_protocol(http_limits(settings)),
    )
    server = DrainingServer(config, state)
    server.run()
    code = 0 if server.started else 3
    # Decodes abandoned at the drain timeout may still be running: every request has been
    # answered, so exit now instead of waiting for them at interpreter shutdown.
    busy = [t.name for t in threading.enumerate() if t.name.startswith("mltag-")]
    if busy:
        log.info("exiting; not waiting for %d worker thread(s)", len(busy))
        logging.shutdown()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from_args(argv)
    except ValidationError as e:
        lines = [
            f"  {'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors()
        ]
        print("mltag-serve: invalid settings:\n" + "\n".join(lines), file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    from .inference.registry import load_initial

    tune_malloc(settings.malloc_tuning)
    t0 = time.perf_counter()
    try:
        loaded = load_initial(settings)  # before binding the port: a bad artifact exits cleanly
    except (ArtifactError, ModelLoadError) as e:
        print(f"mltag-serve: cannot start:\n{e}", file=sys.stderr)
        return 2
    log.info(
        "model ready in %.2f s; starting the HTTP server on %s:%d",
        time.perf_counter() - t0,
        settings.host,
        settings.port,
    )
    return _serve(settings, loaded)


if __name__ == "__main__":
    sys.exit(main())
