"""Hypothesis settings of the hostile-input properties (tests/test_hostile_*.py).

Two profiles, registered here and chosen with ``SWREG_HYPOTHESIS_PROFILE``:

``swreg-hostile``       the default: every property runs the modest example count its test
                        declares, so the whole suite stays fast
``swreg-hostile-fuzz``  what ``scripts/fuzz.py`` uses: the same properties, each with its count
                        times ``SWREG_FUZZ_SCALE`` (default 50), no example database

A property declares its count with :func:`hostile` instead of ``@settings``. Nothing here
touches Hypothesis' global default profile: the rest of the suite is unaffected.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

CI_PROFILE: Final = "swreg-hostile"
FUZZ_PROFILE: Final = "swreg-hostile-fuzz"
PROFILE_VARIABLE: Final = "SWREG_HYPOTHESIS_PROFILE"
SCALE_VARIABLE: Final = "SWREG_FUZZ_SCALE"
DEFAULT_FUZZ_SCALE: Final = 50

_QUIET: Final = [
    HealthCheck.too_slow,  # an HTTP example costs a few milliseconds, a signed certificate too
    HealthCheck.data_too_large,  # oversized bodies are the point
    HealthCheck.function_scoped_fixture,  # one app per test, shared by its examples on purpose
    HealthCheck.filter_too_much,
]

settings.register_profile(CI_PROFILE, deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile(
    FUZZ_PROFILE,
    deadline=None,
    suppress_health_check=_QUIET,
    print_blob=True,
    database=None,  # fuzzing explores; failures print their reproduction blob
)


def active_profile() -> str:
    """The hostile profile in use (``SWREG_HYPOTHESIS_PROFILE``, else the CI one)."""
    name = os.environ.get(PROFILE_VARIABLE, CI_PROFILE)
    if name not in (CI_PROFILE, FUZZ_PROFILE):
        raise ValueError(f"{PROFILE_VARIABLE}={name}: {CI_PROFILE} or {FUZZ_PROFILE}")
    return name


def fuzz_scale() -> int:
    """How many times more examples each property runs under the fuzz profile."""
    if active_profile() != FUZZ_PROFILE:
        return 1
    return max(1, int(os.environ.get(SCALE_VARIABLE, DEFAULT_FUZZ_SCALE)))


def hostile(examples: int) -> settings:
    """The settings of one property: ``examples`` in CI, scaled up under the fuzz profile."""
    return settings(settings.get_profile(active_profile()), max_examples=examples * fuzz_scale())
