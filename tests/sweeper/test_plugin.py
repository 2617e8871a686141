"""Hydra finds the sweeper through the editable install and only its light modules load."""

from __future__ import annotations

import subprocess
import sys


def test_hydra_discovers_the_sweeper_and_its_config():
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = {p.__name__ for p in Plugins.instance().discover(Sweeper)}
    assert "RlbenchOptunaSweeper" in names
    stored = ConfigStore.instance().load("hydra/sweeper/rlbench_optuna.yaml").node
    assert stored.storage == "sqlite:///outputs/optuna.db"
    assert stored.sampler.name == "tpe" and stored.pruner.name == "median"


def test_plugin_scan_imports_neither_optuna_nor_rlbench():
    code = (
        "import sys\n"
        "from hydra.core.plugins import Plugins\n"
        "Plugins.instance()\n"
        "assert 'hydra_plugins.rlbench_optuna_sweeper.config' in sys.modules\n"
        "print('optuna' in sys.modules, 'rlbench' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
