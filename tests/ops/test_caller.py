"""Tests of `pyro_stein.ops.caller.warn`: warnings attributed to the user's line.

A real package warning through nested calls (the mode search's) is tested in test_laplace.py,
which pays for the optimizer's import anyway.
"""

import sys
import types
import warnings

import pytest

from pyro_stein.ops.caller import INTERNAL_PACKAGES, warn

# Helpers that live in "internal" modules: their frames must be skipped.
INTERNAL_SOURCE = '''
import contextlib
from pyro_stein.ops.caller import warn


def inner(category):
    warn("from inside", category)


def middle(category):
    inner(category)


def outer(category=UserWarning):
    middle(category)


def call_back(user_function):
    return user_function()


@contextlib.contextmanager
def warns_on_exit():
    yield
    warn("on exit")
'''


def _module(name, source=INTERNAL_SOURCE):
    """A module named ``name`` built from ``source`` (not registered in ``sys.modules``)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 (this file's own literal source)
    return module


FAKE = _module("pyro_stein.fake")
FAKE_TORCH = _module("torch.fake")


def _next_line():
    """The line after the caller's."""
    return sys._getframe(1).f_lineno + 1


def test_a_direct_call_points_at_this_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        warn("careful", RuntimeWarning)
    (record,) = caught
    assert record.category is RuntimeWarning and str(record.message) == "careful"
    assert record.filename == __file__ and record.lineno == line


@pytest.mark.parametrize("module", [FAKE, FAKE_TORCH], ids=["pyro_stein", "torch"])
def test_nested_internal_frames_are_skipped(module):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        module.outer(DeprecationWarning)
    (record,) = caught
    assert record.category is DeprecationWarning
    assert record.filename == __file__ and record.lineno == line


def test_a_user_callback_called_from_internal_code_is_the_user_frame():
    def user_function():
        warn("in the callback")  # the innermost user frame: this line

    line = user_function.__code__.co_firstlineno + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FAKE.call_back(user_function)
    (record,) = caught
    assert record.filename == __file__ and record.lineno == line and record.category is UserWarning


def test_contextlib_frames_are_skipped():
    # The generator frame (internal) resumes under contextlib's __exit__ (internal too).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        with FAKE.warns_on_exit():
            pass
    (record,) = caught
    assert record.filename == __file__
    # The exit is attributed to the with statement (Python 3.11+) or to its block's last line.
    assert record.lineno in (line, line + 1)


def test_names_that_merely_start_with_a_package_name_are_not_internal():
    for name in ("pyro_steinish", "torchvisionary", "pyrotechnics"):
        assert not any(name == p or name.startswith(p + ".") for p in INTERNAL_PACKAGES)
        outsider = _module(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outsider.outer()
        (record,) = caught
        # Attributed inside the outsider's own code: the line of `warn(...)` in `inner`.
        assert record.filename == f"<{name}>"
        assert record.lineno == INTERNAL_SOURCE.splitlines().index('    warn("from inside", category)') + 1


def test_the_warning_filters_see_the_users_module():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=UserWarning, module=__name__)
        with pytest.raises(UserWarning, match="from inside"):
            FAKE.outer()
