"""Bridges from pyengine to systems beyond one process (serving, batch engines).

Each submodule imports its third-party package lazily: ``pyengine`` itself
needs none of them.
"""
