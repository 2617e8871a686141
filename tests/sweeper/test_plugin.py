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
    store = ConfigStore.instance()
    stored = store.load("hydra/sweeper/rlbench_optuna.yaml").node
    # hydra-optuna-sweeper 1.3.0's defaults (the search= presets set rlbench's own)
    assert (stored.storage, stored.study_name, stored.direction) == (None, None, "minimize")
    assert (stored.n_trials, stored.n_jobs, stored.max_failure_rate) == (20, 2, 0.0)
    assert stored.defaults == [{"sampler": "tpe"}] and stored.pruner.name == "none"
    tpe = store.load("hydra/sweeper/sampler/tpe.yaml").node
    assert tpe._target_ == "optuna.samplers.TPESampler" and tpe.seed is None
    options = {"tpe", "random", "cmaes", "nsgaii", "grid", "qmc", "gp", "bruteforce", "motpe"}
    assert {n.removesuffix(".yaml") for n in store.list("hydra/sweeper/sampler")} == options


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
