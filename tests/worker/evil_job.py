"""A module a hostile enqueuer might name: importing it leaves a mark, so a test can prove it never was."""

import os

MARK = os.environ.get("EVIL_MARK")
if MARK:
    open(MARK, "w").close()


def run() -> str:
    """Would run arbitrary code on the GPU host."""
    return "pwned"
