"""``python -m rig_actors``: start the gateway on its embedded default."""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402 - after monkey-patching, as gevent requires
import os  # noqa: E402
import sys  # noqa: E402

from .config import ConfigError, load_settings, startup_warnings  # noqa: E402
from .logs import configure_logging  # noqa: E402
from .server import serve  # noqa: E402


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"rig-actors: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_fmt)
    for warning in startup_warnings(settings, os.environ):
        logging.getLogger("rig_actors").warning("%s", warning)
    try:
        serve(settings)
    except ConfigError as exc:  # found while building the gateway (e.g. the route table)
        print(f"rig-actors: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
