"""`gpunode --debug`: the Runner and SysRoot log each command and file read to `gpunode.debug`.

Without logging imported nobody can have set --debug up (the CLI imports it to do so), so a
message has nowhere to go: the gate, which never takes --debug, is spared importing logging."""

from __future__ import annotations

import sys

LOGGER = "gpunode.debug"


def debug(message: str, *args) -> None:
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(LOGGER).debug(message, *args)
