"""Progress bars the way the rest of the ecosystem shows them (tqdm), on a terminal only: written to stderr, and off
when stderr is not a terminal (CI logs, pipes), where they would fill the log with carriage-return frames.
`CENTERFOCUS_PROGRESS=1` turns them on anyway, `CENTERFOCUS_PROGRESS=0` off."""

import os
import sys

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    setting = os.environ.get("CENTERFOCUS_PROGRESS")
    if setting is not None:
        return setting not in ("", "0")
    return sys.stderr.isatty()


def progress(iterable=None, total=None, desc=None, unit="it"):
    """`tqdm(iterable, ...)`, shown where `progress_enabled()`."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(), file=sys.stderr,
                dynamic_ncols=True)
