"""Shared test setup: makes tests/ importable (models.py) and seeds nothing
globally; each test draws its own fresh random inputs."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
