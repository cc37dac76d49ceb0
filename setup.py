"""The package list for setuptools: the repository root is the package `rsicrc`, and every package
folder under its three layers is found, so that no folder is left out of the wheel. pyproject.toml
holds everything else (a pyproject table cannot prefix the names that package discovery finds)."""
from setuptools import find_packages, setup

LAYERS = ("model", "pipeline", "rsicrc_qgis")

setup(package_dir={"rsicrc": "."},
      packages=["rsicrc", *(f"rsicrc.{name}" for name in find_packages(include=[f"{layer}*" for layer in LAYERS]))])
