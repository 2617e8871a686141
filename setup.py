"""Ships the top-level Hydra config folders inside the package of a wheel or sdist.

``conf/`` and ``conf_live/`` sit beside ``rlbench/`` in the checkout, where users and the docs
edit them and where an editable install (``make setup``) reads them. Package data cannot name a
folder outside its package, so ``build_py`` adds them as ``rlbench/conf/`` and
``rlbench/conf_live/``: ``pip install .`` (or a wheel) then has them where
:func:`rlbench.config.config_dir` looks first. Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

#: the checkout's config folders; each goes into the package under the same name
CONFIG_FOLDERS = ("conf", "conf_live")


def config_data_files(build_lib: str) -> list[tuple[str, str, str, list[str]]]:
    """``build_py.data_files`` entries for every file under the config folders."""
    entries = []
    for folder in CONFIG_FOLDERS:
        names = sorted(
            os.path.relpath(os.path.join(parent, name), folder)
            for parent, dirs, files in os.walk(folder)
            if "__pycache__" not in parent.split(os.sep)
            for name in files
        )
        entries.append(("rlbench", folder, os.path.join(build_lib, "rlbench", folder), names))
    return entries


class build_py_with_configs(build_py):
    """setuptools' ``build_py`` whose package data also holds the config folders (the wheel
    gets them; the sdist lists them, as both read ``data_files``)."""

    def _get_data_files(self):
        return super()._get_data_files() + config_data_files(self.build_lib)

    def get_data_files_without_manifest(self):
        return super().get_data_files_without_manifest() + config_data_files(self.build_lib)


setup(cmdclass={"build_py": build_py_with_configs})
