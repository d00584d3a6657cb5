"""The allocator settings the CLI applies: to itself and, through the environment, to its workers;
never over settings the environment already names."""

import os
import sys

import pytest

from icldyn.process import MALLOC_ENV, configure_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_settings_reach_the_environment_of_workers(monkeypatch):
    for key in MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    assert configure_allocator() is True
    assert {k: os.environ[k] for k in MALLOC_ENV} == MALLOC_ENV


def test_settings_the_environment_names_are_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert configure_allocator() is False
    assert os.environ["MALLOC_MMAP_MAX_"] == "65536" and "MALLOC_TRIM_THRESHOLD_" not in os.environ
