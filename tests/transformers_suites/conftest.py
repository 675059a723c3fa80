"""transformers' own common test mixins run against CenterFocus (see _upstream.py for how they are fetched)."""

from . import _upstream


def pytest_configure(config):
    # lets _upstream register the pytest marks the upstream test files use (pyproject sets --strict-markers)
    _upstream.PYTEST_CONFIG = config
