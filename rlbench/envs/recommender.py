"""``rlbench/Recommender-v0``: pick a recommendation strategy for a person in a context.

The seed (an RL recommendation trainer) learned, per personality and context, which strategy
(energy × diversity × novelty) earns likes, completions and shares, from logged interactions.
Here the users are simulated, so every algorithm can be trained and judged on the same
population. Dynamics live in :class:`RecommenderCore` (vectorised over ``N`` copies);
:class:`RecommenderEnv` is its one-copy face, documented there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.envs._checks import number as _number
from rlbench.envs.base import Core, CoreEnv, StepResult

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
CONTENT_TYPES = ("music", "video", "game")
MOODS = ("sad", "anxious", "neutral", "relaxed", "happy")
TIMES_OF_DAY = ("morning", "afternoon", "evening", "night")
ENERGY = ("low", "medium", "high")
DIVERSITY = ("focused", "balanced", "diverse")
NOVELTY = ("familiar", "mixed", "exploratory")
N_ACTIONS = 27

# Rows: energy, diversity, novelty. See RecommenderEnv's docstring for their meaning.
# Archetypes (O, C, E, A, N): explorer, anxious introvert, planner, social butterfly, homebody,
# average. Users are drawn around them, so a tabular agent meets a tractable set of contexts.
DEFAULT_PERSONAS = (
    (90.0, 30.0, 70.0, 50.0, 30.0),
    (30.0, 50.0, 10.0, 70.0, 90.0),
    (50.0, 90.0, 50.0, 50.0, 30.0),
    (70.0, 50.0, 90.0, 90.0, 50.0),
    (10.0, 70.0, 30.0, 50.0, 50.0),
    (50.0, 50.0, 50.0, 50.0, 50.0),
)
DEFAULT_TRAIT_WEIGHTS = (
    (0.0, 0.0, 0.6, 0.0, -0.2),
    (0.5, -0.4, 0.0, 0.2, 0.0),
    (0.6, 0.0, 0.0, 0.0, -0.5),
)
DEFAULT_MOOD_WEIGHTS = (0.4, 0.0, 0.2)
DEFAULT_TIME_WEIGHTS = ((0.3, 0.2, -0.2, -0.4), (0.0, 0.0, 0.0, 0.0), (0.0, 0.1, 0.0, -0.1))
DEFAULT_CONTENT_WEIGHTS = ((0.0, -0.1, 0.3), (0.1, 0.0, -0.2), (0.0, 0.1, 0.0))


def action_index(energy: int, diversity: int, novelty: int) -> int:
    """The action of a strategy given as level indices (0-2 each): ``9e + 3d + n``."""
    return 9 * energy + 3 * diversity + novelty


def action_levels(action: np.ndarray | int) -> tuple[Any, Any, Any]:
    """``(energy, diversity, novelty)`` level indices of action(s) ``9e + 3d + n``."""
    a = np.asarray(action)
    return a // 9, (a // 3) % 3, a % 3


def time_of_day(hour: np.ndarray | int) -> np.ndarray:
    """Index into ``TIMES_OF_DAY`` of an hour 0-23: morning 6-12, afternoon 12-18,
    evening 18-22, night 22-6."""
    h = np.asarray(hour)
    return np.select(
        [(h >= 6) & (h < 12), (h >= 12) & (h < 18), (h >= 18) & (h < 22)], [0, 1, 2], 3
    )


def _table(name: str, value: Any, shape: tuple[int, ...], nonnegative: bool = False) -> np.ndarray:
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a numeric table of shape {shape}, got {value!r}"
        ) from None
    if x.shape != shape or not np.isfinite(x).all() or (nonnegative and (x < 0).any()):
        sign = "non-negative " if nonnegative else ""
        raise ValueError(f"{name} must be a {sign}finite table of shape {shape}, got {value!r}")
    return x


class RecommenderCore(Core):
    """Recommendation sessions for ``N`` copies (one user each); see :class:`RecommenderEnv`.

    State per copy: the user's traits (0-100) and hidden taste offsets, the session's hour,
    the user's mood valence in ``[-1, 1]``, the step, and the episode's pre-drawn content
    requests and response draws.
    """

    render_keys: ClassVar[tuple[str, ...]] = ("liked", "completion", "match", "mood")
    info_aggregates: ClassVar[dict[str, str]] = {
        "liked": "mean",
        "disliked": "mean",
        "completed": "mean",
        "skipped": "mean",
        "shared": "mean",
        "completion": "mean",
        "mood_change": "mean",
        "match": "mean",
        "best_action": "mean",
    }
    info_units: ClassVar[dict[str, str]] = {
        "liked": "liked (share, 0-1)",
        "disliked": "disliked (share, 0-1)",
        "completed": "completed (share, 0-1)",
        "skipped": "skipped (share, 0-1)",
        "shared": "shared (share, 0-1)",
        "completion": "completion (0-1, mean)",
        "match": "match (1 - level distance / 6, 0-1, mean)",
        "best_action": "best strategy chosen (share, 0-1)",
        "mood_change": "mood change (-0.5 to 0.5, mean)",
    }
    return_meaning: ClassVar[str] = (
        "the seed's reward summed over a session (likes, completions, shares and mood gains "
        "earn; dislikes and skips cost), so higher is better"
    )
    # every context value is evenly spaced, so these bins give back the seed's discrete state
    tabular_hint: ClassVar[dict[str, Any]] = {"bins": [5, 5, 5, 5, 5, 3, 5, 4]}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        horizon: int = 20,
        personas: Sequence[Sequence[float]] | None = DEFAULT_PERSONAS,
        persona_jitter: float = 5.0,
        trait_mean: float = 50.0,
        trait_sd: float = 20.0,
        content_probs: Sequence[float] = (1.0, 1.0, 1.0),
        trait_weights: Sequence[Sequence[float]] = DEFAULT_TRAIT_WEIGHTS,
        mood_weights: Sequence[float] = DEFAULT_MOOD_WEIGHTS,
        time_weights: Sequence[Sequence[float]] = DEFAULT_TIME_WEIGHTS,
        content_weights: Sequence[Sequence[float]] = DEFAULT_CONTENT_WEIGHTS,
        user_noise: float = 0.15,
        level_cut: float = 0.2,
        completion_noise: float = 0.2,
        complete_threshold: float = 0.9,
        skip_threshold: float = 0.3,
        like_max: float = 0.9,
        dislike_max: float = 0.9,
        share_prob: float = 0.3,
        mood_rate: float = 0.5,
        like_reward: float = 1.0,
        dislike_reward: float = -1.0,
        complete_reward: float = 0.5,
        skip_reward: float = -0.3,
        share_reward: float = 0.8,
        completion_reward: float = 0.5,
        mood_reward: float = 1.0,
    ) -> None:
        super().__init__(num_envs)
        if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        self.horizon = int(horizon)
        if not (personas is None or hasattr(personas, "__len__")):
            raise ValueError(f"personas must be a list of 5-trait rows or null, got {personas!r}")
        if personas is not None and len(personas) == 0:  # it read as the broad population
            raise ValueError(
                "personas is empty: give rows of 5 traits, or null for the broad population "
                "(traits ~ N(trait_mean, trait_sd))"
            )
        if personas is None:
            self.personas = None
        else:
            self.personas = _table("personas", personas, (len(personas), 5))
            if ((self.personas < 0) | (self.personas > 100)).any():
                raise ValueError(f"personas must hold traits in [0, 100], got {personas!r}")
        self.persona_jitter = _number("persona_jitter", persona_jitter, low=0.0)
        self.trait_mean = _number("trait_mean", trait_mean, 0.0, 100.0)
        self.trait_sd = _number("trait_sd", trait_sd, low=0.0)
        probs = _table("content_probs", content_probs, (3,), nonnegative=True)
        if probs.sum() <= 0:
            raise ValueError(f"content_probs must not be all zero, got {content_probs!r}")
        self.content_cdf = np.cumsum(probs / probs.sum())
        self.trait_weights = _table("trait_weights", trait_weights, (3, 5))
        self.mood_weights = _table("mood_weights", mood_weights, (3,))
        self.time_weights = _table("time_weights", time_weights, (3, 4))
        self.content_weights = _table("content_weights", content_weights, (3, 3))
        self.user_noise = _number("user_noise", user_noise, low=0.0)
        self.level_cut = _number("level_cut", level_cut, low=0.0)
        self.completion_noise = _number("completion_noise", completion_noise, low=0.0)
        self.complete_threshold = _number("complete_threshold", complete_threshold, 0.0, 1.0)
        self.skip_threshold = _number("skip_threshold", skip_threshold, 0.0, 1.0)
        if self.skip_threshold > self.complete_threshold:
            raise ValueError(
                f"skip_threshold ({skip_threshold}) must be <= complete_threshold "
                f"({complete_threshold})"
            )
        self.like_max = _number("like_max", like_max, 0.0, 1.0)
        self.dislike_max = _number("dislike_max", dislike_max, 0.0, 1.0)
        self.share_prob = _number("share_prob", share_prob, 0.0, 1.0)
        self.mood_rate = _number("mood_rate", mood_rate, low=0.0)
        self.like_reward = _number("like_reward", like_reward)
        self.dislike_reward = _number("dislike_reward", dislike_reward)
        self.complete_reward = _number("complete_reward", complete_reward)
        self.skip_reward = _number("skip_reward", skip_reward)
        self.share_reward = _number("share_reward", share_reward)
        self.completion_reward = _number("completion_reward", completion_reward)
        self.mood_reward = _number("mood_reward", mood_reward)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(8,), dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)

        n = self.num_envs
        self._rows = np.arange(n)
        self.t = np.zeros(n, dtype=np.int64)
        self.traits = np.full((n, 5), 50.0)
        self.taste = np.zeros((n, 3))
        self.hour = np.zeros(n, dtype=np.int64)
        self.mood = np.zeros(n)
        self.content = np.zeros((n, self.horizon + 1), dtype=np.int64)
        self.draws = np.zeros((n, self.horizon, 3))

    def reset_copies(self, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        for i in np.flatnonzero(mask):
            rng = rngs[i]
            if self.personas is None:
                traits = rng.normal(self.trait_mean, self.trait_sd, 5)
            else:
                persona = self.personas[rng.integers(len(self.personas))]
                traits = persona + rng.normal(0.0, self.persona_jitter, 5)
            self.traits[i] = np.clip(traits, 0.0, 100.0)
            self.taste[i] = rng.normal(0.0, self.user_noise, 3)
            self.hour[i] = rng.integers(24)
            self.mood[i] = rng.uniform(-1.0, 1.0)
            self.content[i] = np.searchsorted(
                self.content_cdf, rng.random(self.horizon + 1), "right"
            )
            self.draws[i] = rng.random((self.horizon, 3))
        np.minimum(self.content, 2, out=self.content)  # guards a cdf that sums to 1 - eps
        self.t[mask] = 0

    # -- the hidden user model ----------------------------------------------------------------
    def trait_bins(self) -> np.ndarray:
        """The seed's discretisation: ``min(int(trait / 20), 4)``, shape ``(N, 5)``."""
        return np.minimum((self.traits // 20).astype(np.int64), 4)

    def mood_bin(self) -> np.ndarray:
        """Index into ``MOODS`` of the current mood valence: five equal bins over [-1, 1]."""
        return np.minimum(((self.mood + 1.0) / 0.4).astype(np.int64), 4)

    def preference_scores(self) -> np.ndarray:
        """Each user's hidden taste score for energy, diversity, novelty now, shape ``(N, 3)``."""
        content = self.content[self._rows, np.minimum(self.t, self.horizon)]
        return (
            ((self.traits - 50.0) / 50.0) @ self.trait_weights.T
            + self.mood[:, None] * self.mood_weights
            + self.time_weights.T[time_of_day(self.hour)]
            + self.content_weights.T[content]
            + self.taste
        )

    def ideal_levels(self) -> np.ndarray:
        """Each user's preferred level (0-2) of energy, diversity, novelty now, ``(N, 3)``."""
        s = self.preference_scores()
        return (s >= -self.level_cut).astype(np.int64) + (s > self.level_cut)

    def ideal_action(self) -> np.ndarray:
        """The hidden best action of every copy now (for oracles and analysis only)."""
        e, d, n = self.ideal_levels().T
        return 9 * e + 3 * d + n

    # -- the protocol -------------------------------------------------------------------------
    def observe(self) -> np.ndarray:
        content = self.content[self._rows, np.minimum(self.t, self.horizon)]
        obs = np.column_stack(
            [
                self.trait_bins() / 4.0,
                content / 2.0,
                self.mood_bin() / 4.0,
                time_of_day(self.hour) / 3.0,
            ]
        )
        return obs.astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        if ((actions < 0) | (actions >= N_ACTIONS)).any():
            raise ValueError(f"actions must be in 0..{N_ACTIONS - 1}, got {actions}")
        ideal = self.ideal_levels()
        best = actions == ideal @ np.array([9, 3, 1])
        chosen = np.column_stack(action_levels(actions))
        match = 1.0 - np.abs(chosen - ideal).sum(axis=1) / 6.0
        u = self.draws[self._rows, self.t]
        completion = np.clip(match + self.completion_noise * (2.0 * u[:, 0] - 1.0), 0.0, 1.0)
        completed = completion >= self.complete_threshold
        skipped = completion < self.skip_threshold
        liked = u[:, 1] < self.like_max * match**2
        disliked = ~liked & (u[:, 1] >= 1.0 - self.dislike_max * (1.0 - match) ** 2)
        share_p = self.share_prob * (0.5 + self.traits[:, 2] / 100.0)
        shared = liked & (u[:, 2] < share_p)
        mood_change = match - 0.5
        self.mood = np.clip(self.mood + self.mood_rate * mood_change, -1.0, 1.0)
        self.t = self.t + 1
        reward = (
            self.like_reward * liked
            + self.dislike_reward * disliked
            + self.complete_reward * completed
            + self.skip_reward * skipped
            + self.share_reward * shared
            + self.completion_reward * completion
            + self.mood_reward * mood_change
        )
        info = {
            "liked": liked.astype(np.int64),
            "disliked": disliked.astype(np.int64),
            "completed": completed.astype(np.int64),
            "skipped": skipped.astype(np.int64),
            "shared": shared.astype(np.int64),
            "completion": completion,
            "mood_change": mood_change,
            "mood": self.mood.copy(),
            "match": match,
            "best_action": best.astype(np.int64),
        }
        return StepResult(
            reward=reward.astype(np.float64),
            terminated=np.zeros(self.num_envs, dtype=bool),
            truncated=self.t >= self.horizon,
            info=info,
        )

    @staticmethod
    def signals(obs: np.ndarray) -> dict[str, np.ndarray]:
        """Decode observations (``(N, 8)`` or ``(8,)``) into the discrete context, as indices:
        one entry per trait name (bin 0-4: 0-20, ..., 80-100), ``content_type`` (into
        ``CONTENT_TYPES``), ``mood`` (into ``MOODS``), ``time_of_day`` (into
        ``TIMES_OF_DAY``)."""
        obs = np.asarray(obs, dtype=np.float64)
        out = {name: np.rint(obs[..., j] * 4).astype(np.int64) for j, name in enumerate(TRAITS)}
        out["content_type"] = np.rint(obs[..., 5] * 2).astype(np.int64)
        out["mood"] = np.rint(obs[..., 6] * 4).astype(np.int64)
        out["time_of_day"] = np.rint(obs[..., 7] * 3).astype(np.int64)
        return out

    def format_step(self, info: dict[str, Any]) -> str:
        flags = [k for k in ("liked", "disliked", "completed", "skipped", "shared") if info[k]]
        return (
            f"match={info['match']:.2f} completion={info['completion']:.2f} "
            f"mood_change={info['mood_change']:+.2f} {' '.join(flags) or '-'}"
        )


class RecommenderEnv(CoreEnv):
    """Choose a recommendation strategy for one user in context, over a session.

    ## Description
    An episode is a session of ``horizon`` recommendations to one user of a simulated
    population. At reset the user is drawn: Big Five traits (openness, conscientiousness,
    extraversion, agreeableness, neuroticism, 0-100): one of ``personas`` (uniformly), each
    trait plus ``N(0, persona_jitter)``, clipped to 0-100 (with ``personas=None``, each trait
    is ``N(trait_mean, trait_sd)`` clipped: a broad population whose 5⁵ trait-bin
    combinations a tabular agent cannot cover on a small budget); a hidden personal taste
    offset per strategy dimension (``N(0, user_noise)``); the session's hour (0-23, uniform)
    and a mood valence (uniform in [-1, 1]). Each request is for
    one content type (music, video, game; drawn per step with weights ``content_probs``).

    The user's hidden taste score for each strategy dimension ``k`` (energy, diversity,
    novelty) is ``trait_weights[k] · (traits - 50) / 50 + mood_weights[k] * mood +
    time_weights[k][time_of_day] + content_weights[k][content] + taste[k]``; the preferred
    level is low (0) below ``-level_cut``, high (2) above ``level_cut``, medium (1) between.
    By default energy follows extraversion, the time of day, games and a good mood;
    diversity follows openness and agreeableness against conscientiousness; novelty follows
    openness against neuroticism. So the best strategy depends on the context the agent sees,
    and, within a context, a little on the user.

    The response to a strategy with level distance ``D = |Δenergy| + |Δdiversity| +
    |Δnovelty|`` (0-6) from the preferred one: ``match = 1 - D / 6``;
    ``completion = clip(match + completion_noise * (2u - 1), 0, 1)``; completed if
    ``completion >= complete_threshold``, skipped if ``< skip_threshold``; liked with
    probability ``like_max * match²``, else disliked with probability ``dislike_max *
    (1 - match)²``; shared (only if liked) with probability ``share_prob * (0.5 +
    extraversion / 100)``; ``mood_change = match - 0.5`` in [-0.5, 0.5], and the mood valence
    moves by ``mood_rate * mood_change`` (clipped to [-1, 1]), which changes what the user
    wants next (through ``mood_weights``): recommendations have consequences within a session.

    ## Action Space
    ``Discrete(27)``: ``action = 9 * energy + 3 * diversity + novelty`` with energy 0 low,
    1 medium, 2 high; diversity 0 focused, 1 balanced, 2 diverse; novelty 0 familiar, 1 mixed,
    2 exploratory. So 0 is (low, focused, familiar), 13 (medium, balanced, mixed), 26 (high,
    diverse, exploratory).

    ## Observation Space
    ``Box(0, 1, (8,), float32)``, the seed's discrete state as evenly spaced values (so equal
    -width binning with 5, 5, 5, 5, 5, 3, 5, 4 bins recovers it exactly):

    | Num | Observation                                                    |
    |-----|----------------------------------------------------------------|
    | 0-4 | trait bins / 4: openness, conscientiousness, extraversion,      |
    |     | agreeableness, neuroticism; bin = min(int(trait / 20), 4)       |
    | 5   | content type / 2: music 0, video 0.5, game 1                    |
    | 6   | mood bin / 4: sad, anxious, neutral, relaxed, happy (valence    |
    |     | in five equal bins over [-1, 1])                                |
    | 7   | time of day / 3: morning 6-12, afternoon 12-18, evening 18-22,  |
    |     | night                                                           |

    ``RecommenderCore.signals(obs)`` decodes these into indices.

    ## Rewards
    The seed's table: ``like_reward`` (+1.0) if liked, ``dislike_reward`` (-1.0) if disliked,
    ``complete_reward`` (+0.5) if completed, ``skip_reward`` (-0.3) if skipped,
    ``share_reward`` (+0.8) if shared, ``completion_reward * completion`` (0 to +0.5), and
    ``mood_reward * mood_change`` (-0.5 to +0.5), summed.

    ## Starting State
    A new user, hour, mood and request sequence drawn from the environment's generator, as are
    the session's response draws, so ``reset(seed=...)`` fixes the episode.

    ## Episode End
    Never terminated; truncated after ``horizon`` recommendations (default 20).

    ## Info
    ``liked``, ``disliked``, ``completed``, ``skipped``, ``shared`` (0/1; their episode means
    are the like rate etc.), ``completion``, ``mood_change``, ``mood`` (valence after the
    step), ``match`` (1 - D / 6) and ``best_action`` (1 if the action was the user's preferred
    strategy).

    ## Arguments
    - ``horizon`` (20); the population: ``personas`` (K×5 traits, default six archetypes:
      explorer, anxious introvert, planner, social butterfly, homebody, average; ``null`` for
      the broad population), ``persona_jitter`` (5), ``trait_mean`` (50) and ``trait_sd``
      (20) (broad population only),
      ``content_probs`` ([1, 1, 1]: music, video, game), ``user_noise`` (0.15).
    - The taste model (rows energy, diversity, novelty): ``trait_weights`` (3×5, columns
      O, C, E, A, N), ``mood_weights`` (3), ``time_weights`` (3×4, columns morning, afternoon,
      evening, night), ``content_weights`` (3×3, columns music, video, game), ``level_cut``
      (0.2).
    - The response: ``completion_noise`` (0.2), ``complete_threshold`` (0.9),
      ``skip_threshold`` (0.3), ``like_max`` (0.9), ``dislike_max`` (0.9), ``share_prob``
      (0.3), ``mood_rate`` (0.5).
    - The reward table: ``like_reward`` (1.0), ``dislike_reward`` (-1.0), ``complete_reward``
      (0.5), ``skip_reward`` (-0.3), ``share_reward`` (0.8), ``completion_reward`` (0.5),
      ``mood_reward`` (1.0).
    - ``render_mode``: ``"ansi"`` or ``"rgb_array"`` (liked, completion, match and mood over
      the session).

    Invalid arguments raise ``ValueError`` naming the argument.
    """

    core_cls = RecommenderCore
