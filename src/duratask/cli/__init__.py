"""The ``duratask`` command line: run workers and inspect or drive a task hub's instances.

``main.py`` holds the command group and its error handling. Each other module holds one family
of commands (``instances``, ``listing``, ``actions``, ``hub``, ``worker``) or one helper
concern (``options``, ``store``, ``parsing``, ``render``, ``timeline_rows``, ``errors``).
"""
