"""Static checks of the public API's types, run by mypy (``make typecheck``), not by pytest.

Each ``check_*.py`` module pins, with :func:`typing.assert_type`, what a public call returns
today; a change to an annotation that callers would see fails the type check. The functions
are never called: importing these modules does nothing.
"""
