"""The promotion gate: a challenger replaces the champion only if the log says it is better.

Both policies are evaluated on the SAME held-out logged episodes by the paired off-policy
comparison (:func:`rlbench.offline.ope.compare`): one bootstrap over episodes, the interval of
``value(challenger) - value(champion)``. The challenger is promoted only when the lower bound of
that interval is above ``margin`` (0 by default); otherwise it is rejected with its numbers.
Fewer than ``min_episodes`` held-out episodes never promote: a bootstrap over one episode has
zero width (its "interval" is the point estimate), over a handful it is far narrower than the
truth's spread, so the gate would pass a challenger on luck.
The estimator is the config's choice, ``pdis_bounds`` by default: on episodes longer than one
decision it is the only estimator whose interval covers the truth (``experiments/ope-validation``:
every other one's covered at most 55% on autoscaling, ``dr`` included, so a gate on them can
promote a truly worse challenger). Its interval is conservative: it widens where the held-out
log does not follow both policies, so it promotes only where the log shows the gain. A session
on another estimator logs :func:`sequential_risk` once at its start (``experiment=drift`` keeps
``dr``: its README measured 0 wrong promotions in 25 there). ``dr_bandit`` suits one-decision
episodes.

Because the calibrated interval is so wide on sequential logs (12-decision episodes, epsilon 0.3:
about 180 wide, no promotion in 86 retrainings), a challenger the gate neither promotes nor shows
worse can be tried on-policy: the live loop's canary (``canary.episodes``) lets it act in a
random ``canary.share`` of episodes and decides by :func:`canary_verdict` on their returns.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from rlbench.errors import UserError
from rlbench.live.triggers import welch
from rlbench.offline import ope
from rlbench.offline.log import InteractionLog

POLY2_MAX_DIM = 12  # observation entries up to which the gate's model has all cross terms
MIN_EPISODES = 10  # held-out episodes below which the gate does not promote (gate.min_episodes)
CANARY_STOP_AFTER = 3  # episodes an arm needs before a canary can stop early (canary_stop)


def sequential_risk(estimator: str, horizon: int | None) -> str | None:
    """The one-line warning for a gate whose interval is not known to cover on this log's
    episodes (``horizon`` decisions each; None: unknown, taken as more than one), else None."""
    if estimator in ope.BOUNDED or horizon == 1:
        return None
    episodes = f"{horizon}-decision" if horizon else "multi-decision"
    return (
        f"gate.estimator={estimator} on {episodes} episodes: its interval is not calibrated on "
        "sequential logs (experiments/ope-validation: every estimator but pdis_bounds covered "
        "the truth at most 55% of the time), so the gate may promote a worse challenger; "
        "gate.estimator=pdis_bounds covers (conservatively)"
    )


@dataclass
class GateResult:
    """The paired comparison and the verdict (``promote``) with its reason in words."""

    estimator: str
    diff: float  # value(challenger) - value(champion)
    low: float
    high: float
    challenger: float
    champion: float
    margin: float
    episodes: int
    decisions: int
    ess_episodes: float  # the challenger's effective sample size on the held-out log
    promote: bool
    why: str
    enough: bool = True  # at least gate.min_episodes held-out episodes

    def metrics(self) -> dict[str, float]:
        """The numbers for MLflow (``gate/<name>``)."""
        d = asdict(self)
        return {
            k: float(d[k])
            for k in ("diff", "low", "high", "challenger", "champion", "margin", "ess_episodes")
        } | {"episodes": float(self.episodes), "decisions": float(self.decisions)}


def paired_gate(
    holdout: InteractionLog,
    challenger: Any,
    champion: Any,
    *,
    estimator: str,
    n_boot: int = 200,
    alpha: float = 0.05,
    margin: float = 0.0,
    gamma: float = 1.0,
    features: str = "auto",
    seed: int = 0,
    min_episodes: int = MIN_EPISODES,
) -> GateResult:
    """Compare ``challenger`` with ``champion`` on ``holdout`` and decide (see the module).
    ``features="auto"``: ``poly2`` up to ``POLY2_MAX_DIM`` observation entries (its size grows
    with their square), ``quadratic`` beyond."""
    if features == "auto":
        dim = int(np.prod(holdout.obs_shape))
        features = "poly2" if dim <= POLY2_MAX_DIM else "quadratic"
    if estimator not in ope.SEQUENTIAL + ope.BANDIT:
        raise UserError(
            f"gate.estimator={estimator!r} is not an estimator; choose one of "
            f"{', '.join(ope.SEQUENTIAL + ope.BANDIT)}"
        )
    with warnings.catch_warnings():  # the diagnostics below carry the support warnings
        warnings.simplefilter("ignore", ope.SupportWarning)
        diff = ope.compare(
            holdout, challenger, champion, [estimator], gamma=gamma, n_boot=n_boot,
            alpha=alpha, seed=seed, features=features,
        )[estimator]  # fmt: skip
    kw = {"gamma": gamma, "features": features}
    ev_ch = ope.Evaluator(ope.make_batch(holdout, challenger), **kw)
    ev_cp = ope.Evaluator(ope.make_batch(holdout, champion), **kw)
    diag = ev_ch.diagnostics()
    low = diff.low
    enough = holdout.n_episodes >= min_episodes
    promote = enough and math.isfinite(low) and low > margin
    interval = f"{diff.value:+.4g} [{diff.low:.4g}, {diff.high:.4g}]"
    if not enough:
        why = (
            f"{estimator}: challenger - champion = {interval} on {holdout.n_episodes} held-out "
            f"episode(s), fewer than gate.min_episodes={min_episodes}: too few for an interval "
            "to mean anything; raise retrain.window or retrain.holdout"
        )
    elif promote:
        why = f"{estimator}: challenger - champion = {interval}, lower bound above {margin:g}"
    elif not math.isfinite(low):  # ope's notes say why (no weighted episode, undefined share)
        reason = diff.notes[0] if diff.notes else "the difference is undefined on the held-out log"
        why = f"{estimator}: {reason} ({interval})"
    else:
        why = f"{estimator}: challenger - champion = {interval}, lower bound not above {margin:g}"
    notes = [w for w in diag.warnings if estimator in ("is", "wis") or "trajectory" not in w]
    if notes:  # trajectory weights matter only to the trajectory estimators
        why += "; " + notes[0]
    return GateResult(
        estimator=estimator,
        diff=diff.value,
        low=diff.low,
        high=diff.high,
        challenger=ev_ch.point(estimator),
        champion=ev_cp.point(estimator),
        margin=margin,
        episodes=holdout.n_episodes,
        decisions=len(holdout),
        ess_episodes=diag.ess_episodes,
        promote=promote,
        why=why,
        enough=enough,
    )


def shown_worse(result: GateResult) -> bool:
    """Did the gate show the challenger worse: its interval's upper bound below the margin, on
    enough held-out episodes? Only then is a challenger the gate did not promote rejected
    outright; an undefined interval or too few episodes is no evidence either way (the canary
    decides)."""
    return result.enough and math.isfinite(result.high) and result.high < result.margin


def canary_verdict(
    challenger_returns: Sequence[float],
    champion_returns: Sequence[float],
    margin: float,
    alpha: float,
) -> tuple[bool, str, dict[str, float]]:
    """Promote the challenger after an on-policy canary? A one-sided Welch t-test of
    ``mean(challenger) - mean(champion) > margin`` on the episodes' returns, at level
    ``alpha``. The arm of each episode was drawn at random, so the episodes are independent
    draws from each policy's return distribution and an equally good challenger passes about
    ``alpha`` of the time (the OPE gate's calibrated interval was too wide to promote at all).
    Fewer than 2 episodes in an arm is no evidence. ``(promote, the test in words, metrics)``."""
    ch = np.asarray(challenger_returns, dtype=float)
    cp = np.asarray(champion_returns, dtype=float)
    metrics = {
        "challenger": float(ch.mean()) if len(ch) else math.nan,
        "champion": float(cp.mean()) if len(cp) else math.nan,
        "challenger_episodes": float(len(ch)),
        "champion_episodes": float(len(cp)),
        "margin": float(margin),
    }
    metrics["diff"] = metrics["challenger"] - metrics["champion"]
    if len(ch) < 2 or len(cp) < 2:
        why = (
            f"canary: {len(ch)} challenger and {len(cp)} champion episode(s), fewer than 2 in an "
            "arm: too few to test"
        )
        return False, why, metrics | {"t": math.nan, "df": math.nan, "p": math.nan}
    t, df = welch(cp, ch, shift=-margin)
    p = float(stats.t.sf(t, df))
    metrics |= {"t": float(t), "df": float(df), "p": p}
    promote = p < alpha
    why = (
        f"canary: challenger - champion = {metrics['diff']:+.4g} per episode on {len(ch)} and "
        f"{len(cp)} on-policy episodes, one-sided Welch t = {t:.2f}, p = {p:.3g} "
        f"{'<' if promote else '>='} canary.alpha={alpha:g} (margin {margin:g})"
    )
    return promote, why, metrics


def canary_stop(
    challenger_returns: Sequence[float], champion_returns: Sequence[float], alpha: float
) -> str | None:
    """Stop a canary early because the challenger is worse? A one-sided Welch t-test of
    ``mean(champion) - mean(challenger) > 0`` at level ``alpha`` once each arm has
    ``CANARY_STOP_AFTER`` episodes; the reason in words, or None to go on.

    Asked after every counted episode, so an equally good challenger is stopped more often than
    ``alpha`` (repeated looks); that costs only a rejection, which a later retraining can undo.
    A promotion is never decided early: the canary's false-promotion rate stays
    ``canary.alpha``, while a clearly worse challenger stops acting on live traffic after a few
    episodes instead of the whole canary."""
    ch = np.asarray(challenger_returns, dtype=float)
    cp = np.asarray(champion_returns, dtype=float)
    if min(len(ch), len(cp)) < CANARY_STOP_AFTER:
        return None
    t, df = welch(ch, cp)  # of mean(champion) - mean(challenger)
    p = float(stats.t.sf(t, df))
    if not p < alpha:
        return None
    return (
        f"canary stopped early: challenger - champion = {ch.mean() - cp.mean():+.4g} per episode "
        f"on {len(ch)} and {len(cp)} on-policy episodes, worse by a one-sided Welch t = "
        f"{t:.2f}, p = {p:.3g} < canary.stop_alpha={alpha:g}"
    )
