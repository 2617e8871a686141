"""Off-policy evaluation: what a target policy would have earned on logged decisions, with an
interval, on numpy alone.

Sequential estimators (episodes, value = expected discounted return of an episode):
``is`` (trajectory importance sampling), ``wis`` (its self-normalised form), ``pdis``
(per-decision IS), ``pdwis`` (per-decision weighted IS), ``dr`` (per-decision doubly robust,
Jiang & Li 2016), ``wdr`` (its weighted form, Thomas & Brunskill 2016), ``fqe`` (fitted-Q
evaluation) and ``pdis_bounds``. Contextual-bandit estimators (every decision on its own, value
= expected reward of one decision): ``dm`` (direct method), ``ips``, ``snips``, ``dr_bandit``
and ``ips_bounds``.

``pdis_bounds`` and ``ips_bounds`` are the estimators whose interval stays honest where the log
does not support the target (no other estimator's does on long episodes: measured in
``experiments/ope-validation``). They split each step's value ``E_b[w_t r_t]`` (``w_t`` the
cumulative importance weight, ``E_b[w_t] = 1`` up to unsupported actions) into the part the
log sees, ``E_b[min(w_t, clip) r_t]``, and the rest, whose weight is exactly
``m_t = 1 - E_b[min(w_t, clip)]`` and whose reward lies in the reward range: so the value lies
in ``sum_t S_t + m_t [lo, hi]``, a partial-identification interval (Manski's worst-case bounds
on the weight the log cannot show). The bootstrap adds the sampling error of both ends. Where
the log follows the target the interval is as narrow as clipped per-decision IS; where it does
not, it widens towards ``horizon x (hi - lo)``, which is what such a log can honestly say. The
point estimate is clipped per-decision weighted IS (the logged mean reward at a step with no
weight at all). ``clip`` defaults to ``sqrt(n)`` (episodes, or decisions for the bandit form:
truncated IS's rate, Ionides 2008); ``reward_range`` to the logged rewards' range (with 0 when
episodes differ in length: a finished episode earns 0) - an assumption, so pass the real
bounds when they are known.

The model behind ``fqe``, ``dr``, ``wdr``, ``dm`` and ``dr_bandit`` is linear in features of the
observation, one block per action (``quadratic``: 1, s, s²; ``poly2``: also the cross terms
s_i s_j; ``linear``; or any callable), solved in closed form: the LSTD-Q fixed point
``sum w phi (phi - gamma (1-done) psi')^T theta = sum w phi r`` with ``psi'`` the target's
expected next features, which is exactly what fitted-Q iteration converges to in this class.
``gamma=0`` makes it the reward regression of ``dm``.

An estimate is NaN where it is undefined: a self-normalised estimator when no logged episode,
or no decision at some step, has weight under the target. Ordinary IS, PDIS and IPS are then 0
(every weight is 0: the unbiased estimate of this log), but with no interval, since every
bootstrap replicate is 0 too. A self-normalised estimator that is undefined in more than
``UNDEFINED_MAX`` of the bootstrap replicates gets no interval either: the percentile interval
of the rest is conditional on the resample holding weighted episodes and covered the truth
a quarter to two thirds of the time (measured, 60 episodes of 6 steps). ``Estimate.notes``
says why, and also when a point lies outside the returns the log can produce (horizon x the
reward range): the model or the weights extrapolate.

Intervals: percentile bootstrap over EPISODES (decisions of one episode or session stay
together). The model is refitted in every replicate (a weighted least-squares solve with the
replicate's episode counts), so the interval includes the model's own sampling error; nothing
is reused between replicates but the features. A paired comparison uses the same replicates for
both policies and reports the interval of the difference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlbench.errors import UserError

SEQUENTIAL = ("is", "wis", "pdis", "pdwis", "dr", "wdr", "fqe", "pdis_bounds")
BANDIT = ("dm", "ips", "snips", "dr_bandit", "ips_bounds")
ESTIMATORS = SEQUENTIAL + BANDIT
MODEL_BASED = frozenset({"dr", "wdr", "fqe", "dm", "dr_bandit"})
BOUNDED = frozenset({"pdis_bounds", "ips_bounds"})  # interval from bounds, not the point's spread
UNWEIGHTED = frozenset({"is", "pdis", "ips"})  # 0, not NaN, where no decision has weight
# above this share of undefined bootstrap replicates a self-normalised estimator has no interval
UNDEFINED_MAX = 0.05
Features = Callable[[np.ndarray], np.ndarray]


class SupportWarning(UserWarning):
    """The target policy takes actions the logging policy never took."""


def quadratic(obs: np.ndarray) -> np.ndarray:
    """Features ``[1, s, s^2]`` of flattened observations."""
    s = obs.reshape(len(obs), -1)
    return np.hstack([np.ones((len(s), 1)), s, s * s])


def linear(obs: np.ndarray) -> np.ndarray:
    """Features ``[1, s]`` of flattened observations."""
    s = obs.reshape(len(obs), -1)
    return np.hstack([np.ones((len(s), 1)), s])


def poly2(obs: np.ndarray) -> np.ndarray:
    """Features ``[1, s, s_i * s_j for i <= j]``: the full second-degree polynomial, whose cross
    terms let a linear model see interactions such as load against capacity (autoscaling's
    value depends on both; measured in ``experiments/continual-learning``)."""
    s = obs.reshape(len(obs), -1)
    i, j = np.triu_indices(s.shape[1])
    return np.hstack([np.ones((len(s), 1)), s, s[:, i] * s[:, j]])


FEATURES: dict[str, Features] = {"quadratic": quadratic, "linear": linear, "poly2": poly2}


@dataclass
class Batch:
    """A log arranged for OPE: decisions sorted by episode then step, with the target's pi.

    ``pi`` and ``pi_next`` are the target's probabilities in ``obs`` and ``next_obs``
    (shape ``(n, A)``); ``propensity`` the behaviour's probability of the logged action.
    """

    episode: np.ndarray  # (n,) codes 0..E-1, non-decreasing
    t: np.ndarray  # (n,) position in the episode, 0..len-1
    obs: np.ndarray
    action: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    done: np.ndarray
    pi: np.ndarray
    pi_next: np.ndarray

    @property
    def n_episodes(self) -> int:
        return int(self.episode[-1]) + 1 if len(self.episode) else 0

    @property
    def n_actions(self) -> int:
        return int(self.pi.shape[1])

    @property
    def ratio(self) -> np.ndarray:
        """pi(a|s) / mu(a|s) of each logged decision."""
        return self.pi[np.arange(len(self.action)), self.action] / self.propensity


def make_batch(log: Any, policy: Any) -> Batch:
    """A :class:`Batch` of ``log`` (an :class:`~rlbench.offline.log.InteractionLog`) for the
    target ``policy`` (anything with ``action_probabilities(obs, deterministic)``)."""
    order = np.lexsort((log.step, log.episode))
    episode = log.episode[order]
    _, episode = np.unique(episode, return_inverse=True)
    starts = np.r_[0, np.flatnonzero(np.diff(episode)) + 1]
    t = np.arange(len(episode)) - np.repeat(starts, np.diff(np.r_[starts, len(episode)]))
    obs, next_obs = log.obs[order], log.next_obs[order]
    pi = target_probabilities(policy, obs, log.n_actions)
    pi_next = target_probabilities(policy, next_obs, log.n_actions)
    return Batch(
        episode.astype(np.int64), t, obs, log.action[order], log.propensity[order],
        log.reward[order], next_obs, log.done[order], pi, pi_next,
    )  # fmt: skip


def target_probabilities(policy: Any, obs: np.ndarray, n_actions: int) -> np.ndarray:
    """pi(.|obs) of the target in chunks, checked to be ``(n, n_actions)`` distributions."""
    from rlbench.offline.collect import check_memoryless

    check_memoryless(policy, "the target policy")
    out = np.empty((len(obs), n_actions))
    for lo in range(0, len(obs), 8192):
        chunk = np.asarray(policy.action_probabilities(obs[lo : lo + 8192], deterministic=True))
        if chunk.shape != (min(8192, len(obs) - lo), n_actions):
            raise UserError(
                f"the target policy gives probabilities of shape {chunk.shape}; the log has "
                f"{n_actions} actions"
            )
        out[lo : lo + 8192] = chunk
    return out


# --------------------------------------------------------------------------- the model


class LinearQ:
    """The per-action linear Q-model of a batch, refittable with any episode weights.

    ``time``: the features are ``x(s)`` and ``tau * x(s)`` with ``tau = t / H`` the elapsed share
    of the longest logged episode, so Q can depend on the time to go. An undiscounted finite
    horizon needs it unless the observation tells the time to go: a time-of-day phase that wraps
    at the episode's end (autoscaling, period = horizon) shows the first and the last step as
    the same state, whose values differ by the whole return.
    """

    def __init__(
        self, batch: Batch, features: str | Features, gamma: float, ridge: float, time: bool
    ):
        fn = FEATURES.get(features) if isinstance(features, str) else features
        if fn is None:
            raise UserError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
        self.b, self.gamma, self.ridge = batch, gamma, ridge
        horizon = float(batch.t.max() + 1)

        def phi(obs: np.ndarray, t: np.ndarray) -> np.ndarray:
            x = fn(obs)
            return np.hstack([x, (t / horizon)[:, None] * x]) if time else x

        self.x = phi(batch.obs, batch.t)
        self.k = self.x.shape[1]
        A = batch.n_actions
        self.d = A * self.k
        self.by_action = [np.flatnonzero(batch.action == a) for a in range(A)]
        self.x_by_action = [self.x[idx] for idx in self.by_action]
        self.r_by_action = [batch.reward[idx] for idx in self.by_action]
        self.bootstraps = gamma > 0 and not batch.done.all()
        if self.bootstraps:
            xn = phi(batch.next_obs, batch.t + 1)
            m = (~batch.done).astype(np.float64)
            # psi' = sum_a pi(a|s') e_a (x) x(s'), times (1 - done), per decision
            self.z = [
                (batch.pi_next[idx, :, None] * xn[idx, None, :] * m[idx, None, None]).reshape(
                    len(idx), self.d
                )
                for idx in self.by_action
            ]
        self.per_episode = self._episode_sums()

    def _episode_sums(self) -> np.ndarray | None:
        """``(E, A * k * (k + 1 [+ d]))``: per episode and action, the sums of ``x x^T``,
        ``x r`` (and ``x psi'^T``) over its decisions, so that a replicate's system is its
        episode counts times these rows; None when episodes are too short or too many for
        that to pay (one-decision sessions: the per-decision sums are as cheap)."""
        b, k = self.b, self.k
        E, A = b.n_episodes, b.n_actions
        width = k + 1 + (self.d if self.bootstraps else 0)
        if len(b.action) < 4 * E or E * A * k * width > 8_000_000:
            return None
        out = np.zeros((E, A, k, width))
        for a, idx in enumerate(self.by_action):
            right = [self.x_by_action[a], self.r_by_action[a][:, None]]
            if self.bootstraps:
                right.append(self.z[a])
            both = np.hstack(right)
            # decisions are in episode order, so each episode's are one slice
            bounds = np.searchsorted(b.episode[idx], np.arange(E + 1))
            for e in np.flatnonzero(np.diff(bounds)):
                lo, hi = bounds[e], bounds[e + 1]
                out[e, a] = self.x_by_action[a][lo:hi].T @ both[lo:hi]
        return out.reshape(E, -1)

    def fit(self, counts: np.ndarray) -> np.ndarray:
        """theta (A, k) for a replicate's episode ``counts`` (E,): the weighted LSTD-Q system
        from the per-episode sums when there are, else from the decisions."""
        A, k = self.b.n_actions, self.k
        mat = np.zeros((self.d, self.d))
        rhs = np.zeros(self.d)
        if self.per_episode is not None:
            sums = (counts @ self.per_episode).reshape(A, k, -1)
            for a in range(A):
                rows = slice(a * k, (a + 1) * k)
                mat[rows, rows] += sums[a, :, :k]
                rhs[rows] = sums[a, :, k]
                if self.bootstraps:
                    mat[rows] -= self.gamma * sums[a, :, k + 1 :]
            total = float(counts @ np.bincount(self.b.episode, minlength=len(counts)))
        else:
            w = counts[self.b.episode]
            for a, idx in enumerate(self.by_action):
                if not len(idx):
                    continue
                xa = self.x_by_action[a]
                xw = xa * w[idx, None]
                rows = slice(a * k, (a + 1) * k)
                mat[rows, rows] += xw.T @ xa
                if self.bootstraps:
                    mat[rows] -= self.gamma * (xw.T @ self.z[a])
                rhs[rows] = xw.T @ self.r_by_action[a]
            total = float(w.sum())
        lam = self.ridge * max(total, 1.0)
        mat[np.diag_indices(self.d)] += lam
        if not self.bootstraps:  # block diagonal: one batched solve of A small systems
            blocks = np.stack([mat[a * k : (a + 1) * k, a * k : (a + 1) * k] for a in range(A)])
            try:
                return np.linalg.solve(blocks, rhs.reshape(A, k, 1))[..., 0]
            except np.linalg.LinAlgError:  # an action never logged: least squares per block
                return np.stack([_solve(blocks[a], rhs[a * k : (a + 1) * k]) for a in range(A)])
        return _solve(mat, rhs).reshape(A, k)

    def q_and_v(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Q(s_i, a_i) and V(s_i) = sum_a pi(a|s_i) Q(s_i, a) for every decision."""
        q_all = self.x @ theta.T  # (n, A)
        q = q_all[np.arange(len(q_all)), self.b.action]
        return q, (q_all * self.b.pi).sum(axis=1)


# --------------------------------------------------------------------------- estimators


@dataclass
class Estimate:
    """A point estimate with its percentile bootstrap interval."""

    name: str
    value: float
    low: float
    high: float
    std_error: float
    n_boot: int
    replicates: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    notes: list[str] = field(default_factory=list)  # why there is no interval, extrapolation

    @property
    def undefined_share(self) -> float:
        """Share of bootstrap replicates in which the estimator was undefined (NaN)."""
        return float(np.mean(~np.isfinite(self.replicates))) if len(self.replicates) else 0.0

    @property
    def width(self) -> float:
        return self.high - self.low

    def covers(self, truth: float) -> bool:
        return bool(self.low <= truth <= self.high)


@dataclass
class Diagnostics:
    """How much the log says about the target: effective sample sizes and weight extremes."""

    n_decisions: int
    n_episodes: int
    ess_episodes: float  # (sum W)^2 / sum W^2 of the trajectory weights
    ess_decisions: float  # the same for the per-decision ratios
    max_ratio: float
    mean_ratio: float  # ~1 when the propensities and the target are right
    max_weight_share: float  # the largest trajectory weight's share of the total
    zero_weight_episodes: float  # share of episodes the target would never have produced
    unsupported_mass: float  # target probability on actions never seen in the log
    unsupported_actions: list[int]
    warnings: list[str]


class Evaluator:
    """Estimators for one log and one target policy, sharing one set of bootstrap replicates.

    ``counts`` rows are bootstrap replicates of episode multiplicities; the first row of every
    estimate is the full log (all ones).
    """

    def __init__(
        self,
        batch: Batch,
        *,
        gamma: float = 1.0,
        features: str | Features = "quadratic",
        ridge: float = 1e-4,
        time_features: bool | None = None,
        clip: float | None = None,
        reward_range: tuple[float, float] | None = None,
    ) -> None:
        if not len(batch.action):
            raise UserError("no decisions to evaluate on: the log or its window is empty")
        if not 0.0 <= gamma <= 1.0:
            raise UserError(f"gamma must be in [0, 1], got {gamma}")
        self.b, self.gamma = batch, float(gamma)
        self.features, self.ridge = features, ridge
        # None: with the time to go in the sequential model exactly when the return is
        # undiscounted (gamma 1) over episodes of more than one decision
        self.time_features = (
            bool(time_features)
            if time_features is not None
            else self.gamma == 1.0 and int(batch.t.max()) > 0
        )
        E = batch.n_episodes
        H = int(batch.t.max()) + 1
        rho = batch.ratio
        # cumulative per-decision weights, carried past an episode's end (reward 0 there)
        self.w = np.ones((E, H))
        self.r = np.zeros((E, H))
        # products along each episode as sums of logs; a zero ratio zeroes the rest (no -inf)
        zero = rho <= 0
        csum = np.cumsum(np.log(np.where(zero, 1.0, rho)))
        czero = np.cumsum(zero)
        starts = np.r_[0, np.flatnonzero(np.diff(batch.episode)) + 1]
        lengths = np.diff(np.r_[starts, len(rho)])
        logw = csum - np.repeat(np.r_[0.0, csum][starts], lengths)
        zeros_so_far = czero - np.repeat(np.r_[0, czero][starts], lengths)
        logw[zeros_so_far > 0] = -np.inf
        self.w[batch.episode, batch.t] = np.exp(logw)
        for e in np.flatnonzero(lengths < H):  # carry the final weight forward
            self.w[e, lengths[e] :] = self.w[e, lengths[e] - 1]
        self.r[batch.episode, batch.t] = batch.reward
        self.disc = self.gamma ** np.arange(H)
        self.W = self.w[np.arange(E), lengths - 1]  # trajectory weights
        self.G = (self.r * self.disc).sum(axis=1)  # discounted returns
        self.lengths = lengths
        self.rho = rho
        self._model: dict[float, LinearQ] = {}
        if clip is not None and not clip > 0:
            raise UserError(f"clip must be a positive weight, got {clip}")
        self.clip = float(clip) if clip is not None else None
        self.reward_range = _reward_range(batch.reward, lengths, reward_range)
        self._range_from_log = reward_range is None

    # -- the estimators, each on a (B, E) matrix of episode counts ------------------------------
    def _is(self, c: np.ndarray) -> np.ndarray:
        # no episode consistent with the target: every weight is 0, and so is the (unbiased)
        # mean; conditioning on "some weight" instead would bias it and drop replicates
        return c @ (self.W * self.G) / c.sum(axis=1)

    def _wis(self, c: np.ndarray) -> np.ndarray:
        return _ratio(c @ (self.W * self.G), c @ self.W)

    def _pdis(self, c: np.ndarray) -> np.ndarray:
        return c @ (self.w * self.r) @ self.disc / c.sum(axis=1)

    def _pdwis(self, c: np.ndarray) -> np.ndarray:
        return _ratio(c @ (self.w * self.r), c @ self.w) @ self.disc

    def _pdis_bounds(self, c: np.ndarray) -> np.ndarray:
        return self._sequential_bounds(c)[0]

    def _sequential_bounds(self, c: np.ndarray) -> tuple[np.ndarray, ...]:
        n = c.sum(axis=1)[:, None]
        wc = np.minimum(self.w, self.clip or np.sqrt(len(self.w)))
        ends = self._ends(c @ (wc * self.r) / n, c @ wc / n, c @ self.r / n)
        return tuple(x @ self.disc for x in ends)

    def _ends(
        self, seen: np.ndarray, mass: np.ndarray, fill: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point, low and high of a step's value from ``seen`` = mean of min(w, clip) * r,
        ``mass`` = mean of min(w, clip) and ``fill`` = the logged mean reward (see the
        module's docstring)."""
        point = np.where(mass > 0, seen / np.where(mass > 0, mass, 1.0), fill)
        missing = np.clip(1.0 - mass, 0.0, None)
        lo, hi = self.reward_range
        # the point lies outside seen + missing * [lo, hi] only when mass > 1 (sampling noise)
        return point, np.minimum(seen + missing * lo, point), np.maximum(seen + missing * hi, point)

    def _model_for(self, gamma: float) -> LinearQ:
        if gamma not in self._model:
            time = self.time_features and gamma > 0  # a reward model (gamma 0) has no future
            self._model[gamma] = LinearQ(self.b, self.features, gamma, self.ridge, time)
        return self._model[gamma]

    def _fqe(self, crow: np.ndarray, q: np.ndarray, v: np.ndarray) -> float:
        return float(crow @ v[self.b.t == 0] / crow.sum())

    def _grid(self, x: np.ndarray) -> np.ndarray:
        """Per-decision values laid out as the (E, H) episode grid (0 past an episode's end)."""
        out = np.zeros(self.w.shape)
        out[self.b.episode, self.b.t] = x
        return out

    def _dr(self, crow: np.ndarray, q: np.ndarray, v: np.ndarray) -> float:
        w_prev = np.hstack([np.ones((len(self.w), 1)), self.w[:, :-1]])
        terms = self.w * (self.r - self._grid(q)) + w_prev * self._grid(v)
        return float(crow @ terms @ self.disc / crow.sum())

    def _wdr(self, crow: np.ndarray, q: np.ndarray, v: np.ndarray) -> float:
        w_prev = np.hstack([np.ones((len(self.w), 1)), self.w[:, :-1]])
        first = _ratio(crow @ (self.w * (self.r - self._grid(q))), crow @ self.w)
        second = _ratio(crow @ (w_prev * self._grid(v)), crow @ w_prev)
        return float((first + second) @ self.disc)

    # bandit: every decision a unit; sums per episode keep the bootstrap clustered
    def _per_episode(self, x: np.ndarray) -> np.ndarray:
        return np.bincount(self.b.episode, weights=x, minlength=self.b.n_episodes)

    def _ips(self, c: np.ndarray) -> np.ndarray:
        n = self._per_episode(np.ones(len(self.rho)))
        return c @ self._per_episode(self.rho * self.b.reward) / (c @ n)

    def _snips(self, c: np.ndarray) -> np.ndarray:
        num = c @ self._per_episode(self.rho * self.b.reward)
        return _ratio(num, c @ self._per_episode(self.rho))

    def _ips_bounds(self, c: np.ndarray) -> np.ndarray:
        return self._bandit_bounds(c)[0]

    def _bandit_bounds(self, c: np.ndarray) -> tuple[np.ndarray, ...]:
        n = c @ self._per_episode(np.ones(len(self.rho)))
        # clipped per decision, summed per session
        wc = np.minimum(self.rho, self.clip or np.sqrt(len(self.rho)))
        return self._ends(
            c @ self._per_episode(wc * self.b.reward) / n,
            c @ self._per_episode(wc) / n,
            c @ self._per_episode(self.b.reward) / n,
        )

    def bounds(self, name: str, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        """Point, low and high end of a bounds estimator (``BOUNDED``) on each row of
        ``counts``, from one pass over the weights."""
        c = np.asarray(counts, dtype=np.float64)
        if name == "pdis_bounds":
            return self._sequential_bounds(c)
        if name == "ips_bounds":
            return self._bandit_bounds(c)
        raise UserError(f"{name!r} is not a bounds estimator; those are {', '.join(BOUNDED)}")

    def _dm(self, crow: np.ndarray, q: np.ndarray, v: np.ndarray) -> float:
        n = self._per_episode(np.ones(len(self.rho)))
        return float(crow @ self._per_episode(v) / (crow @ n))

    def _dr_bandit(self, crow: np.ndarray, q: np.ndarray, v: np.ndarray) -> float:
        n = self._per_episode(np.ones(len(self.rho)))
        x = v + self.rho * (self.b.reward - q)
        return float(crow @ self._per_episode(x) / (crow @ n))

    # -- the public face ------------------------------------------------------------------------
    def replicates(self, name: str, counts: np.ndarray) -> np.ndarray:
        """The estimator ``name`` on each row of ``counts`` (B, E)."""
        return self.replicates_many([name], counts)[name]

    def replicates_many(self, names: Sequence[str], counts: np.ndarray) -> dict[str, np.ndarray]:
        """Several estimators on each row of ``counts``; the model-based ones share each
        replicate's fit (one fit per replicate and discount, not one per estimator)."""
        for name in names:
            if name not in ESTIMATORS:
                known = ", ".join(ESTIMATORS)
                raise UserError(f"unknown estimator {name!r}; choose from {known}")
        c = np.asarray(counts, dtype=np.float64)
        out = {n: getattr(self, f"_{n}")(c) for n in names if n not in MODEL_BASED}
        by_gamma: dict[float, list[str]] = {}
        for name in names:
            if name in MODEL_BASED:
                gamma = 0.0 if name in BANDIT else self.gamma
                by_gamma.setdefault(gamma, []).append(name)
        for gamma, group in by_gamma.items():
            model = self._model_for(gamma)
            vals = {n: np.empty(len(c)) for n in group}
            for i, crow in enumerate(c):
                q, v = model.q_and_v(model.fit(crow))
                for n in group:
                    vals[n][i] = getattr(self, f"_{n}")(crow, q, v)
            out |= vals
        return {n: out[n] for n in names}

    def weightless(self, name: str) -> bool:
        """Whether ``is``, ``pdis`` or ``ips`` is 0 on this log only because no decision (at
        some step) has weight under the target: then every bootstrap replicate is 0 as well,
        and a [0, 0] interval would claim a certainty the log does not give."""
        if name == "is":
            return not self.W.sum() > 0
        if name == "pdis":
            return not self.w.sum(axis=0).min() > 0
        return name == "ips" and not self.rho.sum() > 0

    def value_range(self, name: str) -> tuple[float, float]:
        """The values the reward range allows ``name``: a return over the longest episode (0
        past an episode's end) for a sequential estimator, one reward for a bandit one."""
        lo, hi = self.reward_range
        if name in BANDIT:
            return lo, hi
        total = float(self.disc.sum())
        return lo * total, hi * total

    def point(self, name: str) -> float:
        """The estimate on the whole log."""
        return float(self.replicates(name, np.ones((1, self.b.n_episodes)))[0])

    def diagnostics(self) -> Diagnostics:
        W, rho = self.W, self.rho
        ess_e = float(W.sum() ** 2 / max((W * W).sum(), 1e-300))
        ess_d = float(rho.sum() ** 2 / max((rho * rho).sum(), 1e-300))
        logged = np.bincount(self.b.action, minlength=self.b.n_actions) > 0
        missing = [int(a) for a in np.flatnonzero(~logged)]
        mass = float(self.b.pi[:, ~logged].sum(axis=1).mean()) if missing else 0.0
        notes = []
        if mass > 0:
            notes.append(
                f"the target puts {100 * mass:.1f}% of its probability on actions the logging "
                f"policy never took ({', '.join(map(str, missing))}): importance-weighted "
                "estimates cannot see them and model-based ones extrapolate"
                + (
                    "; the bounds estimators assume their rewards lie in the logged range "
                    f"[{self.reward_range[0]:g}, {self.reward_range[1]:g}] (give reward_range "
                    "if they may not)"
                    if self._range_from_log
                    else ""
                )
            )
        E = len(W)
        # degenerate: a few episodes carry the weight (not: few episodes, all weighed alike)
        if ess_e < min(max(10.0, 0.01 * E), 0.5 * E) and self.w.shape[1] > 1:
            notes.append(
                f"trajectory weights are degenerate: effective sample size {ess_e:.1f} of {E} "
                "episodes (prefer per-decision or model-based estimators)"
            )
        return Diagnostics(
            n_decisions=len(rho),
            n_episodes=E,
            ess_episodes=ess_e,
            ess_decisions=ess_d,
            max_ratio=float(rho.max()),
            mean_ratio=float(rho.mean()),
            max_weight_share=float(W.max() / W.sum()) if W.sum() > 0 else float("nan"),
            zero_weight_episodes=float((W == 0).mean()),
            unsupported_mass=mass,
            unsupported_actions=missing,
            warnings=notes,
        )


def _reward_range(
    reward: np.ndarray, lengths: np.ndarray, given: tuple[float, float] | None
) -> tuple[float, float]:
    """The range the bounds estimators assume a step's reward lies in: ``given``, checked
    against the log, else the logged range (with 0 when episodes differ in length)."""
    seen = (float(reward.min()), float(reward.max()))
    if given is None:
        varied = len(set(lengths.tolist())) > 1
        return (min(seen[0], 0.0), max(seen[1], 0.0)) if varied else seen
    lo, hi = (float(x) for x in given)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise UserError(f"reward_range must be two finite numbers, low <= high; got {given}")
    if seen[0] < lo or seen[1] > hi:
        raise UserError(
            f"reward_range [{lo:g}, {hi:g}] does not hold the logged rewards "
            f"[{seen[0]:g}, {seen[1]:g}]: widen it (or leave it out to use the logged range)"
        )
    return lo, hi


def _solve(mat: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``mat^-1 rhs``; the least-squares solution when ``mat`` is singular (unvisited pairs)."""
    try:
        return np.linalg.solve(mat, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(mat, rhs, rcond=None)[0]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0: a self-normalised estimate with no weight at all is
    undefined (not 0, which would claim the target earns nothing, with a zero-width interval)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_counts(n_episodes: int, n_boot: int, seed: int, chunk: int = 64):
    """``(<=chunk, n_episodes)`` arrays of episode multiplicities, ``n_boot`` rows in all, each
    a resample with replacement; the same ``seed`` gives the same replicates."""
    rng = np.random.default_rng(seed)
    for lo in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - lo)
        draws = rng.integers(0, n_episodes, size=(rows, n_episodes))
        out = np.zeros((rows, n_episodes))
        for i in range(rows):
            out[i] = np.bincount(draws[i], minlength=n_episodes)
        yield out


def _interval(
    name: str,
    point: float,
    reps: np.ndarray,
    alpha: float,
    ends: tuple[np.ndarray, np.ndarray] | None = None,
    weightless: bool = False,
) -> Estimate:
    """Percentile interval of the replicates; no interval (NaN ends, ``notes`` says why) when
    the estimate is undefined, when no logged decision has weight (``weightless``) or when more
    than ``UNDEFINED_MAX`` of the replicates are undefined (the rest are the resamples that
    happened to hold weighted episodes: their spread understates the estimate's). With
    ``ends`` (a bounds estimator's low and high replicates) the interval runs from the alpha/2
    quantile of the lows to the 1 - alpha/2 quantile of the highs."""
    finite = reps[np.isfinite(reps)]
    share = 1.0 - len(finite) / len(reps) if len(reps) else 0.0
    why = None
    if not np.isfinite(point):
        why = "undefined: no logged decision (at some step) has weight under the target"
    elif weightless:
        why = (
            "no interval: no logged decision (at some step) has weight under the target, so the "
            "estimate and every bootstrap replicate are 0 whatever the target earns"
        )
    elif share > UNDEFINED_MAX or len(finite) < 2:
        why = (
            f"no interval: undefined in {100 * share:.0f}% of the bootstrap replicates (resamples "
            "with no weighted episode); the rest's interval would be too narrow"
        )
    if why is not None:
        nan = float("nan")
        return Estimate(name, point, nan, nan, nan, len(reps), reps, [why])
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    if ends is not None:
        low, high = (x[np.isfinite(x)] for x in ends)
        lo = min(float(np.quantile(low, alpha / 2)), point)
        hi = max(float(np.quantile(high, 1 - alpha / 2)), point)
    sd = float(np.std(finite, ddof=1))
    notes = []
    if share > 0:
        notes.append(f"undefined in {100 * share:.1f}% of the bootstrap replicates (left out)")
    return Estimate(name, point, float(lo), float(hi), sd, len(reps), reps, notes)


def _check_range(est: Estimate, lo: float, hi: float, sequential: bool) -> None:
    """Add a note to ``est`` when its point lies outside ``[lo, hi]``, the values the log's
    rewards allow: no policy can earn that, so the estimator extrapolates."""
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    if not np.isfinite(est.value) or lo - tol <= est.value <= hi + tol:
        return
    what = "returns" if sequential else "rewards"
    how = (
        "the model extrapolates"
        if est.name in MODEL_BASED
        else "the importance weights do not average 1 on this log"
    )
    est.notes.append(
        f"{est.value:.4g} is outside the {what} the log can produce [{lo:.4g}, {hi:.4g}]: {how}"
    )


def evaluate(
    log: Any,
    policy: Any,
    estimators: Sequence[str] = SEQUENTIAL,
    *,
    gamma: float = 1.0,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    features: str | Features = "quadratic",
    ridge: float = 1e-4,
    time_features: bool | None = None,
    clip: float | None = None,
    reward_range: tuple[float, float] | None = None,
    warn: bool = True,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Estimate], Diagnostics]:
    """Every estimator in ``estimators`` for ``policy`` on ``log``, with a (1 - alpha) bootstrap
    interval over episodes (``n_boot`` replicates, fixed by ``seed``), and the diagnostics.
    Missing support or degenerate weights are also raised as a :class:`SupportWarning`.
    ``time_features``: the model's time-to-go features (see :class:`LinearQ`; None: with them
    when gamma is 1 and episodes are longer than one decision). ``clip`` and ``reward_range``:
    the bounds estimators' settings (module docstring). ``progress(k)`` is called after every
    ``k`` more bootstrap replicates."""
    batch = log if isinstance(log, Batch) else make_batch(log, policy)
    ev = Evaluator(
        batch, gamma=gamma, features=features, ridge=ridge, time_features=time_features,
        clip=clip, reward_range=reward_range,
    )  # fmt: skip
    diag = ev.diagnostics()
    if warn:
        for note in diag.warnings:
            warnings.warn(note, SupportWarning, stacklevel=2)
    points = ev.replicates_many(estimators, np.ones((1, batch.n_episodes)))
    reps, ends = _chunked(ev, estimators, n_boot, seed, progress)
    out = {}
    for n in estimators:
        out[n] = _interval(n, float(points[n][0]), reps[n], alpha, ends.get(n), ev.weightless(n))
        _check_range(out[n], *ev.value_range(n), n not in BANDIT)
    return out, diag


def _chunked(
    ev: Evaluator,
    names: Sequence[str],
    n_boot: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every estimator's replicates, and the bounds estimators' low and high replicates (their
    points, lows and highs from one pass per chunk)."""
    plain = [n for n in names if n not in BOUNDED]
    parts, ends = [], {n: ([], []) for n in names if n in BOUNDED}
    for c in bootstrap_counts(ev.b.n_episodes, n_boot, seed):
        part = ev.replicates_many(plain, c)
        for n, (lows, highs) in ends.items():
            part[n], low, high = ev.bounds(n, c)
            lows.append(low)
            highs.append(high)
        parts.append(part)
        if progress is not None:
            progress(len(c))
    reps = {n: np.concatenate([p[n] for p in parts]) for n in names}
    return reps, {n: (np.concatenate(lo), np.concatenate(hi)) for n, (lo, hi) in ends.items()}


def compare(
    log: Any,
    policy_a: Any,
    policy_b: Any,
    estimators: Sequence[str] = SEQUENTIAL,
    *,
    gamma: float = 1.0,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    features: str | Features = "quadratic",
    ridge: float = 1e-4,
    time_features: bool | None = None,
    clip: float | None = None,
    reward_range: tuple[float, float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Estimate]:
    """value(a) - value(b) on the same log, each estimator's interval from the SAME bootstrap
    replicates for both policies (paired): the interval of the difference, which is narrower
    than two separate intervals suggest when the estimates share the log's noise. A bounds
    estimator's difference runs from a's low - b's high to a's high - b's low: what neither
    log shows may differ between the policies by anything the reward range allows.
    ``progress(k)``: as in :func:`evaluate` (``2 * n_boot`` replicates in all)."""
    ba, bb = make_batch(log, policy_a), make_batch(log, policy_b)
    kw = {"gamma": gamma, "features": features, "ridge": ridge, "time_features": time_features,
          "clip": clip, "reward_range": reward_range}  # fmt: skip
    ea, eb = Evaluator(ba, **kw), Evaluator(bb, **kw)
    ones = np.ones((1, ba.n_episodes))
    pa, pb = ea.replicates_many(estimators, ones), eb.replicates_many(estimators, ones)
    (ra, ends_a), (rb, ends_b) = (
        _chunked(ea, estimators, n_boot, seed, progress),
        _chunked(eb, estimators, n_boot, seed, progress),
    )
    out = {}
    for n in estimators:
        ends = None
        if n in BOUNDED:
            (la, ha), (lb, hb) = ends_a[n], ends_b[n]
            ends = (la - hb, ha - lb)
        weightless = ea.weightless(n) or eb.weightless(n)
        out[n] = _interval(n, float(pa[n][0] - pb[n][0]), ra[n] - rb[n], alpha, ends, weightless)
        lo, hi = ea.value_range(n)
        _check_range(out[n], lo - hi, hi - lo, n not in BANDIT)
    return out
