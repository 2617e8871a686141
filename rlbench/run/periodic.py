"""What a training job does between learning steps, one job per method.

An agent's ``learn`` calls :class:`PeriodicWork` every few thousand steps with its training
statistics. It logs them as ``train/*`` metrics, evaluates on validation seeds every
``train.eval_every`` steps (the learning curve; the best model so far is checkpointed; a sweep's
pruner may stop the trial), saves a checkpoint every ``train.checkpoint_every`` steps, and moves
the progress line. Any NaN or inf stops training at once (:mod:`rlbench.run.divergence`). A
single run validates in a forked child on the idle core and records the result at the next
validation point (:mod:`rlbench.run.forked_validation`); with ``eval.policy=best`` the final
weights are validated too (:meth:`PeriodicWork.final_is_best`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlbench.run import divergence, forked_validation
from rlbench.run.checkpoints import CheckpointDir
from rlbench.run.evaluate import EvalResult, evaluate
from rlbench.run.forked_validation import ValidationChild
from rlbench.run.progress import Progress
from rlbench.run.timing import Phases
from rlbench.run.trial import TrialContext
from rlbench.tracking import Tracker, schema


def next_mark(steps: int, every: int) -> int:
    """The first multiple of ``every`` after ``steps`` (never, when ``every`` is 0)."""
    return (steps // every + 1) * every if every else sys.maxsize


class PeriodicWork:
    """The callback a job passes to ``agent.learn``; returns False to stop (pruned)."""

    def __init__(
        self,
        agent: Any,
        policy: Any,
        *,
        env_id: str,
        env_kwargs: Mapping[str, Any],
        validation_seeds: Sequence[int],
        deterministic: bool,
        total: int,
        eval_every: int,
        checkpoint_every: int,
        tracker: Tracker,
        ckpt: CheckpointDir,
        trial: TrialContext | None,
        progress: Progress,
        best: float = -math.inf,
        best_step: int | None = None,
        phases: Phases | None = None,
        fork: bool = False,
    ) -> None:
        self.agent, self.policy = agent, policy
        self.phases = phases or Phases()
        self.env_id, self.env_kwargs = env_id, env_kwargs
        self.validation_seeds, self.deterministic = list(validation_seeds), deterministic
        self.total, self.eval_every, self.checkpoint_every = total, eval_every, checkpoint_every
        self.tracker, self.ckpt, self.trial, self.progress = tracker, ckpt, trial, progress
        self.best = best  # best validation score so far (the best checkpoint's)
        self.best_step = best_step  # the step the best checkpoint was saved at
        self.last_score = best  # the latest validation score (what a pruned trial reports)
        self.pruned = False
        self.fork = fork  # validations in a forked child (rlbench.run.forked_validation)
        self._child: ValidationChild | None = None
        self._next_eval = next_mark(agent.num_steps, eval_every)
        self._next_checkpoint = next_mark(agent.num_steps, checkpoint_every)

    def __call__(self, steps: int, stats: dict[str, float]) -> bool:
        self.log_stats(steps, stats)
        if self.eval_every and self._next_eval <= steps < self.total:
            self._next_eval = next_mark(steps, self.eval_every)
            with self.phases.phase("validation"):
                if self.fork:
                    self.collect()
                    self._child = self._fork_validation(steps)
                else:
                    self.validate(steps)
            if self.trial is not None and self.trial.report(steps, self.last_score):
                self.pruned = True
                return False
        if self.checkpoint_every and self._next_checkpoint <= steps < self.total:
            self._next_checkpoint = next_mark(steps, self.checkpoint_every)
            with self.phases.phase("checkpoints"):
                self.ckpt.save(self.agent, self.state())
        self.progress.update(steps, **{k: v for k, v in stats.items() if "return" in k})
        return True

    def log_stats(self, steps: int, stats: Mapping[str, float]) -> None:
        """The agent's statistics as ``train/<name>`` metrics, after checking they are finite."""
        metrics = {schema.train_metric(name): value for name, value in stats.items()}
        divergence.check_stats(self.agent, steps, metrics)
        self.tracker.log_metrics(metrics, step=steps)

    def validate(self, steps: int, *, final: bool = False) -> None:
        """Evaluate on the validation seeds, log the learning-curve point, keep the best model.

        Equal scores keep the earlier checkpoint, except for the ``final`` weights, which win
        a tie: ``eval.policy=best`` departs from the last weights only when validation says
        an earlier checkpoint was strictly better (and the final ones need no file)."""
        divergence.check_parameters(self.agent, steps)
        result = self._evaluate()
        divergence.check_returns(self.agent, steps, result.returns)
        self.last_score = result.mean_return
        self.tracker.log_metrics(result.metrics(schema.VAL_PREFIX), step=steps)
        if self.last_score > self.best or (final and self.last_score == self.best):
            self.best, self.best_step = self.last_score, steps
            if not final:
                self.ckpt.save(self.agent, self.state(), best=True)

    def _evaluate(self) -> EvalResult:
        """The current weights on the validation seeds (the curve needs no trajectory)."""
        return evaluate(
            self.policy,
            self.env_id,
            self.env_kwargs,
            self.validation_seeds,
            deterministic=self.deterministic,
            record_trajectory=False,
        )

    def _fork_validation(self, steps: int) -> ValidationChild:
        """:meth:`validate`'s evaluation in a forked child; :meth:`collect` takes its result.
        A child that beats the best writes its model as the pending best checkpoint."""
        divergence.check_parameters(self.agent, steps)
        best = self.best

        def work() -> dict[str, Any]:
            result = self._evaluate()
            saved = bool(np.isfinite(result.returns).all()) and result.mean_return > best
            if saved:
                self.ckpt.save_pending_best(self.agent)
            return {
                "returns": result.returns.tolist(),
                "metrics": result.metrics(schema.VAL_PREFIX),
                "saved": saved,
            }

        return forked_validation.fork(work, steps)

    def collect(self) -> None:
        """The forked validation's result, once it is done: as :meth:`validate` records it."""
        child, self._child = self._child, None
        if child is None:
            return
        out = child.result()
        returns = np.asarray(out["returns"], dtype=float)
        divergence.check_returns(self.agent, child.steps, returns)
        self.last_score = float(np.mean(returns))
        self.tracker.log_metrics(out["metrics"], step=child.steps)
        if out["saved"]:
            self.best, self.best_step = self.last_score, child.steps
            self.ckpt.promote_pending_best(self.state())

    def finish(self) -> None:
        """After learning: the last forked validation's result."""
        with self.phases.phase("validation"):
            self.collect()

    def abandon(self) -> None:
        """Learning failed or was interrupted: a validation still running is stopped."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()

    def final_is_best(self, steps: int) -> bool:
        """``eval.policy=best``: validate the final weights as one more candidate; True when
        they scored best (else the best checkpoint, ``ckpt.best``, is the one to score)."""
        with self.phases.phase("validation"):
            self.validate(steps, final=True)
        return self.best_step == steps

    def state(self) -> dict[str, Any]:
        """What a checkpoint records beside the model, so that ``resume=true`` continues."""
        return {
            "mlflow_run_id": self.tracker.run_id,
            "steps": self.agent.num_steps,
            "algo": self.agent.name,
            "best_score": None if math.isinf(self.best) else self.best,
            "best_step": self.best_step,
        }
