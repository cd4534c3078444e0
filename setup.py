"""The package list, found rather than written out: pyproject.toml holds everything else.

The packages under src/ (``exporter``, ``exporter.config``, ...), and conf/ with its option groups
as ``exporter.conf`` (pyproject.toml's ``package-dir`` maps that name to the top-level folder).
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "exporter.conf", *(f"exporter.conf.{group}" for group in find_packages("conf"))])
