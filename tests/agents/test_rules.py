"""The hand-written rules: their documented tables on hand-built observations, and the runbook's
diagnosis against the self-healing env's hidden failure."""

from __future__ import annotations

import numpy as np
import pytest

from rlbench.agents import build_agent, load_agent
from rlbench.envs import make_vec
from rlbench.errors import UserError

SCHEDULER, RECOMMENDER, SELFHEALING = (
    "rlbench/ScriptScheduler-v0",
    "rlbench/Recommender-v0",
    "rlbench/SelfHealing-v0",
)


def agent(algo: str, env_id: str, **settings):
    return build_agent({"name": algo, **settings}, make_vec(env_id, 2, seed=0), seed=0)


# -- user_feedback (scheduler) ---------------------------------------------------------------
def scheduler_obs(pref: int, manual: int) -> list[float]:
    """Observation entries: avg gap, (pref + 1) / 2, manual / 8 (the default window), interval."""
    return [0.5, (pref + 1) / 2, manual / 8, 0.5]


def test_user_feedback_does_what_the_user_asked():
    rule = agent("user_feedback", SCHEDULER)
    obs = np.array([scheduler_obs(+1, 0), scheduler_obs(-1, 3), scheduler_obs(0, 8)])
    # +1 "run more often" -> x0.85 (0); -1 "less often" -> x1.15 (2); no request -> keep (1),
    # however many manual runs (the default limit is the whole window)
    assert rule.predict(obs).tolist() == [0, 2, 1]


def test_user_feedback_with_a_manual_limit_shortens_the_interval_of_a_script_run_by_hand():
    rule = agent("user_feedback", SCHEDULER, manual_limit=1)
    obs = np.array([scheduler_obs(0, 1), scheduler_obs(0, 2), scheduler_obs(-1, 5)])
    # 1 manual run is not above the limit; 2 are; a stated preference still wins
    assert rule.predict(obs).tolist() == [1, 0, 2]


# -- recommender_rule --------------------------------------------------------------------------
def recommender_obs(o: int, c: int, e: int, a: int, n: int, context=(0, 0, 0)) -> list[float]:
    """Trait bins 0-4 (O, C, E, A, N) and content type, mood, time of day as the env encodes."""
    content, mood, tod = context
    return [o / 4, c / 4, e / 4, a / 4, n / 4, content / 2, mood / 4, tod / 3]


def test_recommender_rule_maps_personality_to_a_strategy():
    rule = agent("recommender_rule", RECOMMENDER)
    obs = np.array(
        [
            # E 3 -> energy high (2); O 4 -> diversity high (2), novelty high (2): 9*2+3*2+2
            recommender_obs(4, 1, 3, 2, 1),
            # E 2 -> medium (1); O 0 -> low (0); N 4 is high: novelty max(0 - 1, 0) = 0: 9
            recommender_obs(0, 2, 2, 2, 4),
            # E 0 -> low; O 2 -> medium (1); N 3 high: novelty 1 - 1 = 0: 0 + 3 + 0
            recommender_obs(2, 2, 0, 2, 3),
        ]
    )
    assert rule.predict(obs).tolist() == [26, 9, 3]


def test_recommender_rule_ignores_the_context_and_honours_its_level_cuts():
    rule = agent("recommender_rule", RECOMMENDER, low_bin=1, high_bin=3)
    # O bin 1 -> medium (1 >= low_bin, not above high_bin); E bin 4 -> high; N bin 3 -> medium
    same = [recommender_obs(1, 0, 4, 0, 3, ctx) for ctx in [(0, 0, 0), (2, 4, 3), (1, 2, 1)]]
    assert rule.predict(np.array(same)).tolist() == [9 * 2 + 3 * 1 + 1] * 3


def test_recommender_rule_rejects_crossed_level_cuts():
    with pytest.raises(UserError, match=r"low_bin \(3\) and algo.high_bin \(1\)"):
        agent("recommender_rule", RECOMMENDER, low_bin=3, high_bin=1)


# -- runbook (self-healing) ---------------------------------------------------------------------
def healing_obs(cpu, memory, errors, latency, dependency, failed_attempts=0) -> list[float]:
    """Symptoms as the env's table shows them; replicas 4 of 1-10, utilisation 0.5."""
    return [cpu, memory, errors, latency, 3 / 9, dependency, 0.5, failed_attempts / 5]


# the env docstring's symptom profiles; expected (first action, action after 2 failed attempts)
PROFILES = {
    "healthy": (healing_obs(0.5, 0.4, 0.01, 0.1, 1.0), (0, 0)),  # no-op, no-op
    "crash": (healing_obs(0.05, 0.1, 0.9, 1.0, 1.0), (1, 6)),  # restart, then fail over
    "memory leak": (healing_obs(0.5, 0.95, 0.15, 0.4, 1.0), (4, 1)),  # clear cache, restart
    "cpu spike": (healing_obs(0.98, 0.5, 0.1, 0.6, 1.0), (2, 6)),  # scale up, fail over
    "dependency down": (healing_obs(0.5, 0.4, 0.6, 0.8, 0.1), (6, 5)),  # fail over, roll back
}


def test_runbook_table_first_fix_then_the_retry_after_failed_attempts():
    rule = agent("runbook", SELFHEALING)
    first = np.array([obs for obs, _ in PROFILES.values()])
    retry = first.copy()
    retry[:, 7] = 2 / 5  # two failed attempts on the incident
    assert rule.predict(first).tolist() == [a for _, (a, _) in PROFILES.values()]
    assert rule.predict(retry).tolist() == [b for _, (_, b) in PROFILES.values()]
    retry[:, 7] = 1 / 5  # one failure is not yet "retry_after: 2"
    assert rule.predict(retry).tolist() == [a for _, (a, _) in PROFILES.values()]


def test_runbook_diagnoses_the_hidden_failure_from_the_default_symptoms():
    """Over 8 episodes of the runbook's own play, its diagnosis matches the env's hidden failure
    (none, crash, memory leak, CPU spike, dependency down) at every step."""
    env = make_vec(SELFHEALING, 8, seed=11)
    rule = build_agent({"name": "runbook"}, env, seed=0)
    row_of_failure = np.array([4, 3, 2, 1, 0])  # FAILURES order -> the runbook's table rows
    obs = env.reset()
    seen = set()
    for _ in range(100):
        truth = row_of_failure[env.core.failure]
        diagnosis = rule.diagnose(env.core.signals(obs))
        np.testing.assert_array_equal(diagnosis, truth)
        seen |= set(truth.tolist())
        obs, *_ = env.step(rule.predict(obs))
    assert seen == {0, 1, 2, 3, 4}  # every failure type was met


def test_rules_keep_their_settings_through_a_model_file(tmp_path):
    rule = agent("runbook", SELFHEALING, cpu_above=0.95, retry_after=1)
    rule.save(tmp_path / "m.zip")
    loaded = load_agent(tmp_path / "m.zip", make_vec(SELFHEALING, 2, seed=0))
    assert (loaded.limits["cpu_above"], loaded.retry_after) == (0.95, 1)
    obs = np.array([healing_obs(0.93, 0.5, 0.1, 0.6, 1.0, 1)])
    # cpu 0.93 is no spike under 0.95 and no other symptom matches: healthy -> no-op
    assert loaded.predict(obs).tolist() == [0]


@pytest.mark.parametrize(
    ("key", "value"), [("dependency_below", 5), ("cpu_above", -0.5), ("error_above", "nan")]
)
def test_a_runbook_limit_outside_the_normalised_signals_is_refused(key, value):
    """dependency_below=5 made every step "dependency down" (fail over forever) and scored."""
    with pytest.raises(UserError, match=rf"algo\.{key} must be in \[0, 1\] .*, got {value}$"):
        agent("runbook", SELFHEALING, **{key: value})


@pytest.mark.parametrize(
    ("algo", "needs"),
    [("user_feedback", "scheduler"), ("recommender_rule", "recommender"),
     ("runbook", "selfhealing")],
)  # fmt: skip
def test_a_rule_on_another_env_is_one_clear_error(algo, needs):
    with pytest.raises(UserError) as err:
        agent(algo, "rlbench/Autoscaling-v0")
    assert str(err.value) == (
        f"{algo} needs the {needs} environment (env={needs}); got rlbench/Autoscaling-v0"
    )


@pytest.mark.parametrize(
    ("env_id", "why"),
    [(RECOMMENDER, "needs 3 actions"), (SELFHEALING, "needs 3 actions"),
     (SCHEDULER, "reports load and queue")],
)  # fmt: skip
def test_threshold_on_another_seed_env_says_what_to_pick_instead(env_id, why):
    """threshold is rlbench-train's default algo, so `rlbench-train env=recommender` meets this
    first: each refusal ends by naming what to run instead."""
    with pytest.raises(UserError) as err:
        agent("threshold", env_id)
    assert why in str(err.value)
    assert str(err.value).endswith(
        ": pick an autoscaling env, or another algo (random, qlearning, ppo, dqn)"
    )
