"""Every name rlbench writes into its stores, defined once: MLflow tag keys, artifact paths,
metric names, Optuna attribute names.

A job writes them, a report, a notebook, ``resume=true`` and ``+reproduce`` read them back, so a
name spelled twice would drift; ``tests/test_layout.py`` fails when an ``rlbench.*`` tag key, an
artifact path or a metric name is spelled as a string anywhere else. Imports nothing.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- MLflow tags
# provenance (rlbench.tracking.provenance)
GIT_COMMIT_TAG = "git.commit"
GIT_DIRTY_TAG = "git.dirty"
HOST_TAG = "host"
PROCESS_TAG = "rlbench.process"  # "<pid>:<start time>" of the job that writes the run
DEVICE_TAG = "device"
SEED_TAG = "seed"
VERSION_TAG_PREFIX = "version."  # + a library's short name: version.torch
CODE_TAG = "rlbench.code"  # the code that made the run (see provenance.code_version)
MIXED_CODE = "mixed"  # CODE_TAG of a run resumed under other code or libraries: never reused
RUN_KEY_TAG = "rlbench.run_key"  # the configuration's hash (rlbench.run.checkpoints.run_key)
ALGO_PRESET_TAG = "rlbench.algo_preset"  # the algo= option chosen (ppo_seed), not algo.name
ENV_PRESET_TAG = "rlbench.env_preset"  # the conf/env_presets.yaml block applied: CartPole-v1/ppo
SCORED_POLICY_TAG = "rlbench.scored_policy"  # eval.policy of a scored run: final | best
SCORED_STEP_TAG = "rlbench.scored_step"  # the training step of the weights the score is for
HYDRA_OVERRIDES_TAG = "hydra.overrides"
HYDRA_CHOICES_TAG = "hydra.choices"
HYDRA_OUTPUT_DIR_TAG = "hydra.output_dir"
HYDRA_JOB_NUM_TAG = "hydra.job.num"
TRACKING_URI_SOURCE_TAG = "rlbench.tracking_uri_source"  # which setting named the store:
URI_SOURCES = ("cli", "preset", "env", "default", "argument")  # (see tracker.uri_source)
BENCHMARK_TAG = "benchmark"  # a user tag (tracking.tags.benchmark) that reports select on
# MLflow's own tag keys, so that its UI shows nesting, the source, the user and the commit
CLAIMS_EXPERIMENT = "rlbench-claims"  # one run per live claim on a run key (tracking.claim=lease)
CLAIM_KEY_TAG = "rlbench.claim.key"
CLAIM_OWNER_TAG = "rlbench.claim.owner"  # "<pid>:<start time>@<host>"
CLAIM_BEAT_TAG = "rlbench.claim.beat"  # the holder's last renewal (Unix time, seconds)
PARENT_RUN_TAG = "mlflow.parentRunId"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
SOURCE_COMMIT_TAG = "mlflow.source.git.commit"
USER_TAG = "mlflow.user"
RUN_NAME_TAG = "mlflow.runName"  # set at the end of a run: its name then shows the score
NOTE_TAG = "mlflow.note.content"  # a run's description (Markdown) in MLflow's UI
# an experiment's kind: MLflow 3 UIs that read it open the runs (model training), not traces
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # MLflow's value for model training

# how a training run ended or continued
ERROR_TAG = "error"  # the one-line error of a FAILED or KILLED run
PRUNED_TAG = "pruned"  # "true" on a sweep trial's run that the pruner stopped
PRUNED_AT_STEP_TAG = "rlbench.pruned_at_step"
DIVERGED_TAG = "rlbench.diverged"  # "true": training produced NaN or inf
RESUMED_TAG = "rlbench.resumed"  # "true": the run was reopened from a checkpoint
RESUMED_FROM_STEP_TAG = "rlbench.resumed_from_step"
PARAMS_CHANGED_ON_RESUME_TAG = "rlbench.params_changed_on_resume"

# runs that are not trainings
KIND_TAG = "rlbench.kind"
REPORT_KIND = "report"  # KIND_TAG of a comparison report's run: reports never compare reports
REPORT_NAME_TAG = "rlbench.report.name"
REPORT_FILTER_TAG = "rlbench.report.filter"

# sweeps: the parent run of a study and its trials' runs
SWEEP_STUDY_TAG = "rlbench.sweep.study"  # on the parent and on every trial's run
SWEEP_ROLE_TAG = "rlbench.sweep.role"
SWEEP_PARENT_ROLE = "parent"
SWEEP_STORAGE_TAG = "rlbench.sweep.storage"
SWEEP_TRIAL_NUMBER_TAG = "rlbench.sweep.trial_number"
SWEEP_SEED_INDEX_TAG = "rlbench.sweep.seed_index"
BEST_TRIAL_NUMBER_TAG = "rlbench.best.trial_number"
BEST_PARAM_TAG_PREFIX = "rlbench.best."  # + a searched key: rlbench.best.algo.learning_rate

# --------------------------------------------------------------------------- artifacts
CONFIG_ARTIFACT = "config.yaml"  # the resolved config, passwords masked
MODEL_DIR = "model"  # model<suffix> (the weights scored) and best_model or last_model<suffix>
MODEL_STEM = "model"  # the weights the final evaluation scored (eval.policy: final or best)
BEST_MODEL_STEM = "best_model"  # eval.policy=final: the best validation checkpoint
LAST_MODEL_STEM = "last_model"  # eval.policy=best, an earlier checkpoint scored: the final weights
EVAL_DIR = "eval"
EPISODES_FILE = "eval_episodes.csv"  # one row per final evaluation episode
TRAJECTORY_FILE = "trajectory.csv"  # the first evaluation episode, step by step
TRAJECTORY_PLOT_FILE = "trajectory.png"
EPISODES_ARTIFACT = f"{EVAL_DIR}/{EPISODES_FILE}"
TRAJECTORY_ARTIFACT = f"{EVAL_DIR}/{TRAJECTORY_FILE}"
TRAJECTORY_PLOT_ARTIFACT = f"{EVAL_DIR}/{TRAJECTORY_PLOT_FILE}"
EVAL_METRICS_FILE = "eval_metrics.json"  # beside the run's outputs, not logged
TIMING_FILE = "timing.json"  # where the command's wall time went, beside the run's outputs
REPORT_FILE = "report.md"  # a comparison report's files (its run's artifacts)
REPORT_HTML_FILE = "report.html"
SCORES_FILE = "scores.csv"
SWEEP_DIR = "optuna"  # a sweep parent's artifacts
BEST_TRIALS_FILE = "best_trials.json"
TRIALS_FILE = "trials.csv"
HISTORY_PLOT_FILE = "optimization_history.png"
IMPORTANCE_PLOT_FILE = "param_importances.png"

# --------------------------------------------------------------------------- metrics
# Two evaluations, two namespaces: the learning curve (periodic evaluation on validation seeds,
# which also picks the best checkpoint) and the run's score (one final evaluation on held-out
# test seeds). Runs logged before they were split wrote both under eval/ (LEGACY_*): readers
# fall back to those names, so old stores keep working.
VAL_PREFIX = "val/"  # periodic evaluation on validation seeds: the learning curve
TEST_PREFIX = "test/"  # the final evaluation on held-out test seeds: the run's score
TRAIN_PREFIX = "train/"  # an agent's training statistics, namespaced by the run
SWEEP_PREFIX = "sweep/"  # a sweep parent's counts and best value
TIME_PREFIX = "time/"  # seconds of wall time per phase of a training command (run.timing)
RETURN = "mean_return"  # mean episode return (reward summed over an episode)
STD_RETURN = "std_return"  # their standard deviation over the evaluation episodes
MEAN_LENGTH = "mean_length"  # mean episode length (steps)
SCORE_METRIC = f"{TEST_PREFIX}{RETURN}"  # a run's score; also the sweeper's objective
CURVE_METRIC = f"{VAL_PREFIX}{RETURN}"  # the learning curve, against environment steps
STD_RETURN_METRIC = f"{TEST_PREFIX}{STD_RETURN}"
MEAN_LENGTH_METRIC = f"{TEST_PREFIX}{MEAN_LENGTH}"
TOTAL_STEPS_METRIC = f"{TRAIN_PREFIX}total_steps"  # logged with the final evaluation only
BEST_VALUE_METRIC = f"{SWEEP_PREFIX}best_value"
LEGACY_EVAL_PREFIX = "eval/"  # before the split: validation and test under one prefix
LEGACY_SCORE_METRIC = f"{LEGACY_EVAL_PREFIX}{RETURN}"  # its curve ends with the test score
#: what a reader asks for -> the name the same value had in runs logged before the split
LEGACY_NAMES = {SCORE_METRIC: LEGACY_SCORE_METRIC, CURVE_METRIC: LEGACY_SCORE_METRIC}


def val_metric(name: str) -> str:
    """The metric key of a periodic (validation) evaluation statistic: ``val/<name>``."""
    return VAL_PREFIX + name


def held_out_metric(name: str) -> str:
    """The metric key of a final (held-out test) evaluation statistic: ``test/<name>``."""
    return TEST_PREFIX + name


def curve_metric(score_metric: str) -> str:
    """The learning curve of a final metric: ``val/<name>`` for ``test/<name>``; any other
    name (``eval/...`` of old runs, a custom metric) is its own curve."""
    if score_metric.startswith(TEST_PREFIX):
        return VAL_PREFIX + score_metric.removeprefix(TEST_PREFIX)
    return score_metric


def score_of(metrics: dict[str, float]) -> float | None:
    """A run's score from its final metrics (``run.data.metrics``): ``test/mean_return``, or
    ``eval/mean_return`` for a run logged before the split; None when it has neither."""
    value = metrics.get(SCORE_METRIC)
    return metrics.get(LEGACY_SCORE_METRIC) if value is None else value


def train_metric(name: str) -> str:
    """The metric key of an agent's training statistic: ``train/<name>``."""
    return TRAIN_PREFIX + name


def time_metric(phase: str) -> str:
    """The metric key of a phase's wall seconds: ``time/<phase>_s``."""
    return f"{TIME_PREFIX}{phase}_s"


def sweep_metric(name: str) -> str:
    """The metric key of a sweep parent's statistic: ``sweep/<name>``."""
    return SWEEP_PREFIX + name


# --------------------------------------------------------------------------- Optuna attributes
PRUNER_ATTR = "rlbench.pruner"  # trial system attribute: the pruner's name and arguments
PRUNED_ATTR = "rlbench.pruned"  # trial system attribute: the job was told to stop
IGNORED_ATTR = "rlbench.not_counted"  # failed for a reason that is not the configuration's fault
DUPLICATE_ATTR = "rlbench.duplicate_of"  # an enqueued configuration two processes queued at once
PARENT_RUN_ATTR = "rlbench.mlflow_parent_run_id"  # study user attribute: the sweep's MLflow run
FIXED_OVERRIDES_ATTR = "fixed_overrides"  # trial user attribute: the sweep's other overrides

# --------------------------------------------------------------------------- model registry
POLICY_MODEL_NAME = "policy"  # the pyfunc model logged in a run (its LoggedModel's name)
POLICY_ENV_FILE = "env.json"  # the environment a served policy acts in (gymnasium id, args)
CHAMPION = "champion"  # the alias the decision server follows
CHALLENGER = "challenger"  # a newer version waiting for promotion
REGISTRY_TAG_PREFIX = "rlbench.registry."  # + registered_/promoted_/rolled_back_ + by/at/why
REPLACED_VERSION_TAG = "rlbench.registry.replaced_version"  # what rollback returns to

# --------------------------------------------------------------------------- sweeper extras
# written to hydra.sweep.dir (and the parent run's optuna/ folder) as hydra-optuna-sweeper does
OPTIMIZATION_RESULTS_FILE = "optimization_results.yaml"
SEARCH_SPACE_ATTR = "rlbench.search_space"  # study user attribute: {param: distribution JSON}
# study user attributes: what its trials learned beside the searched keys, and their code
FIXED_SETTINGS_ATTR = "rlbench.fixed_settings"  # {dotted key: value}, volatile keys left out
STUDY_CODE_ATTR = "rlbench.code"  # rlbench.tracking.provenance.code_version() at its start
MLFLOW_RUN_ATTR = "rlbench.mlflow_run_id"  # trial user attribute: the MLflow run of its job
# parameter importance, everywhere (parent run plot, notebook 02, README): fANOVA on the first
# objective as it is (not flipped), with this seed, so that the three agree on one study
IMPORTANCE_SEED = 0

# --------------------------------------------------------------------------- offline (issue 17)
# an interaction log registered as an MLflow dataset input of the runs that use it
DATASET_CONTEXT_TAG = "mlflow.data.context"  # MLflow's own key of an input's role
TRAINING_CONTEXT = "training"  # offline training (rlbench-train algo=bc data=...)
EVALUATION_CONTEXT = "evaluation"  # off-policy evaluation (rlbench-ope)
LOG_SOURCE_TYPE = "rlbench-interaction-log"  # the dataset's source_type: a log folder or file
OPE_KIND = "ope"  # KIND_TAG of an off-policy evaluation's run
OPE_PREFIX = "ope/"  # ope/<policy>/<estimator>{,_low,_high}, ope/diff/<estimator>...
OPE_TABLE_FILE = "ope.csv"  # an evaluation run's table: one row per policy and estimator


def ope_metric(policy: str, estimator: str, part: str = "") -> str:
    """``ope/<policy>/<estimator>`` (the estimate) or ``..._low`` / ``..._high`` (its interval)."""
    return f"{OPE_PREFIX}{policy}/{estimator}{'_' + part if part else ''}"


# --------------------------------------------------------------------------- live (issue 18)
LIVE_KIND = "live"  # KIND_TAG of an rlbench-live session's parent run
LIVE_SESSION_TAG = "rlbench.live.session"  # the session's name, on the parent and its children
LIVE_ROLE_TAG = "rlbench.live.role"
RETRAINING_ROLE = "retraining"  # LIVE_ROLE_TAG of a session's child run: one challenger
LIVE_TRIGGER_TAG = "rlbench.live.trigger"  # why a retraining ran (the trigger's sentence)
LIVE_GATE_TAG = "rlbench.live.gate"  # promoted|rejected|refused|rolled_back|canary (on trial)
LIVE_GATE_WHY_TAG = "rlbench.live.gate_why"  # the verdict's numbers in words
LIVE_PREFIX = "live/"  # the parent's series: live/reward, live/decisions_per_s, ...
GATE_PREFIX = "gate/"  # a retraining's gate: gate/diff, gate/low, gate/high, gate/champion, ...
CANARY_PREFIX = "canary/"  # its on-policy canary: canary/diff, canary/p, canary/challenger, ...
LIVE_STATE_FILE = "session.json"  # a live session folder's resumable state
LIVE_AWAITING_FILE = "awaiting_approval"  # control/: a challenger's version while it waits


def live_metric(name: str) -> str:
    """A live session's series: ``live/<name>``."""
    return LIVE_PREFIX + name


def gate_metric(name: str) -> str:
    """A retraining's gate value: ``gate/<name>``."""
    return GATE_PREFIX + name


def canary_metric(name: str) -> str:
    """A retraining's canary value (the on-policy A/B after the gate): ``canary/<name>``."""
    return CANARY_PREFIX + name


# --------------------------------------------------------------------------- forecasting (issue 19)
FORECAST_EXPERIMENT = "forecasting"  # rlbench-forecast train's runs
FORECAST_KIND = "forecaster"  # KIND_TAG of a forecaster's training run
FORECASTER_DIR = "forecaster"  # the run's forecaster folder; a registered version's files
FORECAST_MODEL_NAME = "load-forecaster"  # the registered model's default name
FORECASTER_TAG = "rlbench.forecaster"  # a run's env.forecast=lstm weights: sha256:<hex>
INPUTS_TAG = "rlbench.inputs"  # JSON {config key: sha256:<hex>} of the files the run read
INPUTS_PARAM_PREFIX = "inputs."  # the same digests as params: part of the run key
FORECAST_PREFIX = "forecast/"  # forecast/<series>/<forecaster>/<stat>: held-out accuracy


def forecast_metric(series: str, forecaster: str, stat: str) -> str:
    """A held-out accuracy value: ``forecast/<series>/<forecaster>/<stat>`` (``stat``: mae,
    mape, or mae_by_step logged with the horizon step as its MLflow step)."""
    return f"{FORECAST_PREFIX}{series}/{forecaster}/{stat}"
