"""A writer for the kill test: logs decision i with reward i, prints the count after each flush."""

from __future__ import annotations

import sys
import time

from rlbench.offline.log import LogWriter

root, batch = sys.argv[1], int(sys.argv[2])
w = LogWriter(root, env_id="test/Tiny-v0", obs_shape=(2,), n_actions=3, batch_size=batch)
i = 0
while True:
    w.append(
        {
            "ts": 1_767_225_600.0 + i, "episode": f"ep{i // 10}", "step": i % 10,
            "obs": [i, -i], "action": i % 3, "propensity": 0.5, "reward": float(i),
            "next_obs": [i + 1, -i - 1], "done": i % 10 == 9, "terminal": False,
            "policy": "slow", "policy_version": "1", "context": {"user_id": f"u{i % 7}"},
        }
    )  # fmt: skip
    i += 1
    if i % batch == 0:
        print(w.flushed, flush=True)
    time.sleep(0.0002)
