import platform
import sys

import pytest

from pyro_stein.fitting import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_the_allocator_is_tuned_for_the_fit_on_glibc_and_left_alone_elsewhere():
    with allocator.retain_freed_memory() as tuned:
        assert tuned is GLIBC


def test_the_tuning_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(allocator, "RETAIN_FREED_MEMORY", False)
    with allocator.retain_freed_memory() as tuned:
        assert tuned is False


def test_an_error_inside_still_restores_the_thresholds(monkeypatch):
    if not GLIBC:
        pytest.skip("glibc only")
    calls = []
    libc = allocator._glibc()

    class Recorder:
        def mallopt(self, option, value):
            calls.append((option, value))
            return libc.mallopt(option, value)

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return libc.malloc_trim(pad)

    monkeypatch.setattr(allocator, "_glibc", lambda: Recorder())
    with pytest.raises(RuntimeError), allocator.retain_freed_memory():
        raise RuntimeError("inside the fit")
    assert calls[-2:] == [(allocator._M_TRIM_THRESHOLD, allocator._TRIM_THRESHOLD_AFTER), ("trim", 0)]
