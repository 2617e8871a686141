"""Tabular Q-learning at the seed project's budget: 10,000 episodes x 200 steps (2M steps).

``conf/algo/qlearning.yaml`` on ``rlbench/Autoscaling-v0`` with 200-step episodes, trained by
``QLearningAgent.learn`` (one vectorised ε-greedy choice and table update per batched step),
then judged on held-out seeds like every run. Timed (construction included) at three numbers of
copies running the same 10,000 episodes side by side: 8 (``train.num_envs``' default), 100 and
1000. More copies means fewer, larger batched steps, but also fewer table updates (copies in
the same state share one averaged update), so the policy can get worse: the target is judged at
100 copies, the most copies measured to learn as well as 8 do (see the returns in the table).
"""

from __future__ import annotations

from benchmarks.common import Row, judged, time_call
from benchmarks.training import compose, held_out_return

EPISODES, HORIZON = 10_000, 200
TARGET_S, TARGET_COPIES = 3.0, 100
COPIES = (8, 100, 1000)


def train(copies: int, episodes: int, seed: int = 0) -> tuple[float, float, float]:
    """Wall and CPU seconds for ``episodes`` x 200 steps over ``copies`` copies; the policy's
    held-out return."""
    from rlbench.agents import build_agent
    from rlbench.config import env_spec
    from rlbench.envs import make_vec

    cfg = compose(["algo=qlearning", f"seed={seed}", f"env.horizon={HORIZON}"])
    env_id, env_kwargs = env_spec(cfg.env)

    def fit():
        venv = make_vec(env_id, copies, seed=seed, **env_kwargs)
        agent = build_agent(cfg.algo, venv, seed=seed)
        agent.learn(episodes * HORIZON)
        return agent

    wall, cpu, agent = time_call(fit)
    return wall, cpu, held_out_return(agent, cfg)


def run(quick: bool = False) -> list[Row]:
    episodes = 1_000 if quick else EPISODES
    rows = []
    for copies in COPIES:
        wall, cpu, score = train(copies, episodes)
        print(f"  qlearning {copies:4d} copies: {wall:6.1f} s wall, return {score:.1f}", flush=True)
        at_target = copies == TARGET_COPIES
        rows.append(
            Row(
                group="qlearning",
                case=f"{episodes} episodes x {HORIZON} steps, {copies} copies",
                value=wall,
                unit="s",
                cpu_seconds=cpu,
                reference=f"held-out return {score:.0f}; {episodes * HORIZON / wall / 1e6:.2f}M "
                "steps/s",
                target=f"<= {TARGET_S:.0f} s" if at_target else "",
                status=judged(wall <= TARGET_S, quick) if at_target else "-",
                details={"env_steps": episodes * HORIZON, "copies": copies, "return": score},
            )
        )
    return rows
