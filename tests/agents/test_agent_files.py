"""Model files: save -> load gives the same agent, bad files are one clear UserError, no pickle."""

from __future__ import annotations

import io
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch
from agent_fakes import make_fake

from rlbench.agents import agent_class, build_agent, load_agent
from rlbench.errors import UserError

CONFIGS = {
    "random": {"name": "random"},
    "static": {"name": "static"},
    "threshold": {"name": "threshold", "cooldown": 3},
    "qlearning": {"name": "qlearning", "bins": 6},
    "ppo": {"name": "ppo", "n_steps": 16, "batch_size": 32, "n_epochs": 2},
    "dqn": {"name": "dqn", "learning_starts": 20, "buffer_size": 500, "batch_size": 16},
}
OBS = np.random.default_rng(1).random((6, 2)).astype(np.float32)


def trained(algo: str, steps: int = 128):
    agent = build_agent(CONFIGS[algo], make_fake(n=4, seed=5), seed=5, device="cpu")
    agent.learn(steps)
    agent.predict(OBS)  # leaves state behind (random's generator, threshold's cooldowns)
    return agent


@pytest.mark.parametrize("algo", list(CONFIGS))
def test_save_load_round_trip_acts_identically(algo, tmp_path):
    agent = trained(algo)
    path = tmp_path / f"model{agent.file_suffix}"
    agent.save(path)
    loaded = load_agent(path, make_fake(n=4, seed=99))
    assert type(loaded) is type(agent)
    assert loaded.num_steps == agent.num_steps >= 128
    assert loaded.cfg == agent.cfg
    for deterministic in (True, False):
        for _ in range(3):  # stateful agents must continue their state identically
            np.testing.assert_array_equal(
                loaded.predict(OBS, deterministic), agent.predict(OBS, deterministic)
            )


@pytest.mark.parametrize("algo", ["qlearning", "ppo", "dqn"])
def test_a_loaded_agent_resumes_learning_from_its_counter(algo, tmp_path):
    agent = trained(algo)
    agent.save(tmp_path / "m")
    loaded = load_agent(tmp_path / "m", make_fake(n=4, seed=5))
    before = loaded.num_steps
    loaded.learn(before + 64)
    assert before + 64 <= loaded.num_steps <= before + 128


@pytest.mark.parametrize("algo", ["ppo", "dqn", "qlearning"])
def test_a_checkpoint_saved_from_the_callback_matches_that_moment(algo, tmp_path):
    agent = build_agent(CONFIGS[algo], make_fake(n=4, seed=5), seed=5, device="cpu")
    seen = {}

    def checkpoint(n, stats):
        if not seen:
            agent.save(tmp_path / "ckpt")
            seen["steps"], seen["actions"] = n, agent.predict(OBS)

    agent.learn(2500, checkpoint)
    assert agent.num_steps > seen["steps"]
    loaded = load_agent(tmp_path / "ckpt", make_fake(n=4))
    assert loaded.num_steps == seen["steps"]
    np.testing.assert_array_equal(loaded.predict(OBS), seen["actions"])


def _dqn(agent):
    """What both DQN agents keep, read alike: SB3's model, or the numpy agent itself."""
    model = getattr(agent, "model", agent)
    if hasattr(agent, "model"):
        params = np.concatenate([p.detach().numpy().ravel() for p in model.policy.parameters()])
        moments = model.policy.optimizer.state_dict()["state"]
        adam = np.concatenate([m["exp_avg"].numpy().ravel() for m in moments.values()])
        return model, params, adam, model.replay_buffer.size()
    params = np.concatenate([agent.q_net.flat, agent.q_net_target.flat])
    return model, params, agent.adam_m, agent.replay.size()


@pytest.mark.parametrize("loop", ["numpy", "sb3"])
def test_dqn_file_keeps_exploration_and_update_counters(tmp_path, loop):
    agent = build_agent({**CONFIGS["dqn"], "loop": loop}, make_fake(n=4, seed=5), 5, "cpu")
    agent.learn(200)
    agent.save(tmp_path / "m")
    loaded = load_agent(tmp_path / "m", make_fake(n=4))
    assert type(loaded) is type(agent)
    (model, params, adam, _), (again, params2, adam2, _) = _dqn(agent), _dqn(loaded)
    for name in ("exploration_rate", "_n_calls", "_n_updates"):
        assert getattr(again, name) == getattr(model, name)
    # DQN collects train_freq=4 batched steps of 4 copies (16 env steps) between updates, so
    # a target of 200 ends at 208 steps = 52 batched steps
    assert agent.num_steps == 208 and model._n_calls == 52
    assert model._n_updates > 0
    np.testing.assert_array_equal(params2, params)
    np.testing.assert_array_equal(adam2, adam)


@pytest.mark.parametrize("loop", ["numpy", "sb3"])
def test_a_resumed_dqn_refills_its_replay_buffer_before_updating(tmp_path, loop):
    agent = build_agent({**CONFIGS["dqn"], "loop": loop}, make_fake(n=4, seed=5), 5, "cpu")
    agent.learn(200)  # learning_starts=20
    agent.save(tmp_path / "m")
    loaded = load_agent(tmp_path / "m", make_fake(n=4))
    model = _dqn(loaded)[0]
    start, updates = loaded.num_steps, model._n_updates
    loaded.learn(start + 16)  # 16 new transitions: fewer than learning_starts
    assert model._n_updates == updates
    assert _dqn(loaded)[3] == 4  # 4 batched steps of 4 copies
    loaded.learn(start + 64)
    assert model._n_updates > updates
    assert model.learning_starts == 20


def test_qlearning_file_is_an_npz_of_its_table(tmp_path):
    agent = trained("qlearning")
    path = tmp_path / "q.npz"
    agent.save(path)
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["q"], agent.q)
        assert b'"algo": "qlearning"' in npz["meta.json"]


def test_neural_model_files_hold_only_json_npy_and_tensor_state(tmp_path):
    trained("ppo").save(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        names = set(zf.namelist())
        assert names == {
            "meta.json",
            "policy.pt",
            "optimizer.pt",
            "torch_rng.pt",
            "numpy_global_keys.npy",
        }
        state = torch.load(io.BytesIO(zf.read("policy.pt")), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def _flipped(path) -> bytes:
    """The file with 50 bytes inverted inside its largest member's compressed data (the
    central directory intact: it opens, and that member fails when it is inflated)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        member = max(zf.infolist(), key=lambda i: i.compress_size)
    start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    start += min(200, member.compress_size // 2)
    for i in range(start, start + min(50, member.compress_size // 4)):
        data[i] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("algo", ["qlearning", "ppo", "dqn"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "flipped"])
def test_a_corrupt_file_is_a_user_error(algo, damage, tmp_path):
    """Flipped bytes inside a member: zlib's own error (exit 1) before it was caught; a numpy
    DQN's file is mostly compressed arrays, so most damage to it lands there."""
    path = tmp_path / "m.zip"
    trained(algo).save(path)
    data = path.read_bytes()
    damaged = {"garbage": b"not a model at all" * 10, "truncated": data[: len(data) // 2],
               "empty": b"", "flipped": _flipped(path) if damage == "flipped" else b""}  # fmt: skip
    path.write_bytes(damaged[damage])
    with pytest.raises(UserError, match=rf"m.zip is not a valid rlbench {algo} model: "):
        agent_class(algo).load(path, make_fake(n=4))
    with pytest.raises(UserError, match=r"m.zip is not a valid rlbench model: "):
        load_agent(path, make_fake(n=4))


def test_a_corrupt_table_is_a_user_error(tmp_path):
    agent = trained("qlearning")
    agent.q[0, 0] = np.nan
    agent.save(tmp_path / "m.npz")
    with pytest.raises(UserError, match=r"not a valid rlbench qlearning model: .*NaN"):
        load_agent(tmp_path / "m.npz", make_fake(n=4))


def test_a_pickled_object_inside_is_refused(tmp_path):
    path = tmp_path / "m.zip"
    trained("ppo").save(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    torch.save({"weights": Fraction(1, 3)}, buf)  # an arbitrary Python object, not a tensor
    members["policy.pt"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(UserError, match="not a valid rlbench ppo model: unreadable tensor data"):
        load_agent(path, make_fake(n=4))


def test_a_file_of_another_algorithm_names_both(tmp_path):
    path = tmp_path / "m.npz"
    trained("qlearning").save(path)
    with pytest.raises(UserError, match=r"holds a 'qlearning' model, not a 'ppo' one"):
        agent_class("ppo").load(path, make_fake(n=4))


def test_a_file_for_another_env_shape_is_a_user_error(tmp_path):
    from rlbench.envs import make_vec

    path = tmp_path / "m.zip"
    trained("ppo").save(path)
    with pytest.raises(UserError, match=r"trained on an env with observations \[2\]"):
        load_agent(path, make_vec("rlbench/Autoscaling-v0", 2, seed=0))


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_agent(tmp_path / "nope.zip", make_fake())


def test_saving_replaces_a_file_whole(tmp_path):
    path = tmp_path / "m.zip"
    trained("static").save(path)
    trained("threshold").save(path)
    assert type(load_agent(path, make_fake(n=4))).__name__ == "ThresholdAgent"
    assert [p.name for p in tmp_path.iterdir()] == ["m.zip"]  # no temporary files left
