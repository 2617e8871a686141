"""``rlbench-report`` end to end on a store with known runs: ranking, ties, sections, atomicity.

The fixture logs runs straight through ``MlflowClient`` with scores chosen by hand:

- steady: ppo -5.0..-5.4 > dqn -8.0..-8.4 > threshold -20..-20.4 > random -40..-40.4, every
  pair fully separated (P = 1, CI [1, 1]): four distinct ranks, ppo wins with IQM -5.2
  (the mean of the middle three of five).
- spike: ppo {-10, -12, -14, -16, -18} and dqn {-9, -11, -13, -15, -17} interleave, as two
  samples of one distribution: P(dqn > ppo) = 15/25 = 0.60 (pairs: -9 beats all 5, -11 beats 4,
  -13 beats 3, -15 beats 2, -17 beats 1), whose CI with five seeds contains 0.5: a tie. By IQM
  dqn (-13) leads ppo (-14). threshold (-30..-34) and random (-50..-54) are separated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rlbench.errors import UserError
from rlbench.results.report import ReportData, ReportSettings, analyse, build_report, summary_lines
from rlbench.tracking.schema import (
    CURVE_METRIC,
    LEGACY_SCORE_METRIC,
    SCORE_METRIC,
    held_out_metric,
)

SCORES = {
    ("steady", "ppo"): [-5.0, -5.1, -5.2, -5.3, -5.4],
    ("steady", "dqn"): [-8.0, -8.1, -8.2, -8.3, -8.4],
    ("steady", "threshold"): [-20.0, -20.1, -20.2, -20.3, -20.4],
    ("steady", "random"): [-40.0, -40.1, -40.2, -40.3, -40.4],
    ("spike", "ppo"): [-10.0, -12.0, -14.0, -16.0, -18.0],
    ("spike", "dqn"): [-9.0, -11.0, -13.0, -15.0, -17.0],
    ("spike", "threshold"): [-30.0, -31.0, -32.0, -33.0, -34.0],
    ("spike", "random"): [-50.0, -51.0, -52.0, -53.0, -54.0],
}
STEPS = (1000, 2000, 3000)


def _trajectory(tmp: Path, instances: int) -> Path:
    frame = pd.DataFrame(
        {
            "step": range(1, 21),
            "action": [1] * 20,
            "reward": [-1.0] * 20,
            "influx": [900.0 + 10 * t for t in range(20)],
            "capacity": [100.0 * instances] * 20,
            "instances": [instances] * 20,
            "queue": [max(0.0, 10.0 * t - 50) for t in range(20)],
        }
    )
    path = tmp / "trajectory.csv"
    frame.to_csv(path, index=False)
    return path


def log_run(client, exp_id, tmp, *, algo, load, seed, score, status="FINISHED", tags=None,
            metric=True, trajectory=True, legacy=False, env="autoscaling",
            env_id="rlbench/Autoscaling-v0", aggregates=None) -> str:  # fmt: skip
    """One training run as rlbench-train logs it (the parts the report reads); ``legacy``: as it
    logged runs before validation and test were split (one ``eval/`` name for both);
    ``load=None``: an environment without load patterns; ``aggregates``: its final ``test/*``
    aggregates (default: autoscaling's cost)."""
    from mlflow.entities import Metric, Param

    tags = {"rlbench.run_key": f"{algo}-{load}-{seed}", **(tags or {})}
    run_id = client.create_run(exp_id, run_name=f"{algo}-{load}-s{seed}", tags=tags).info.run_id
    params = {"algo.name": algo, "env.name": env, "env.load": load, "seed": seed,
              "env.id": env_id, "train.total_steps": STEPS[-1]}  # fmt: skip
    params = {k: v for k, v in params.items() if v is not None}
    aggregates = {"cost": -score / 2} if aggregates is None else aggregates
    metrics = []
    if metric and legacy:
        # a learning curve rising to the final score; the last value is the score
        metrics = [Metric(LEGACY_SCORE_METRIC, score * (1 + 0.5 * (3 - i)), 0, s)
                   for i, s in enumerate(STEPS, start=1)]  # fmt: skip
        metrics += [Metric("eval/cost", -score / 2, 0, STEPS[-1])]
    elif metric:
        # a validation curve rising towards the score, then the held-out test score
        metrics = [Metric(CURVE_METRIC, score * (1 + 0.5 * (3 - i)), 0, s)
                   for i, s in enumerate(STEPS[:-1], start=1)]  # fmt: skip
        metrics += [Metric(SCORE_METRIC, score, 0, STEPS[-1])]
        metrics += [Metric(held_out_metric(k), v, 0, STEPS[-1]) for k, v in aggregates.items()]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    if trajectory:
        client.log_artifact(run_id, str(_trajectory(tmp, 10 + seed)), "eval")
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(mlflow_template, tmp_path_factory):
    """A copy of the migrated template store holding the runs above, plus runs to leave out."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("report-store")
    db = root / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("rlbench", artifact_location=(root / "art").as_uri())
    tmp = root / "files"
    tmp.mkdir()
    # an older run of a configuration retrained later: replaced by the newer one (same run key)
    older = log_run(client, exp_id, tmp, algo="random", load="steady", seed=0, score=99.0)
    for (load, algo), values in SCORES.items():
        for seed, score in enumerate(values):
            log_run(client, exp_id, tmp, algo=algo, load=load, seed=seed, score=score)
    # runs a comparison must not use
    log_run(client, exp_id, tmp, algo="ppo", load="spike", seed=9, score=500.0, status="RUNNING")
    log_run(client, exp_id, tmp, algo="ppo", load="spike", seed=8, score=500.0, status="FAILED")
    log_run(client, exp_id, tmp, algo="ppo", load="spike", seed=7, score=500.0,
            tags={"pruned": "true"})  # fmt: skip
    log_run(client, exp_id, tmp, algo="dqn", load="spike", seed=6, score=0.0, metric=False)
    log_run(client, exp_id, tmp, algo="ppo", load="spike", seed=5, score=500.0,
            tags={"rlbench.kind": "report"})  # fmt: skip
    return {"uri": uri, "root": root, "older": older}


def settings(store, tmp_path, **kw) -> ReportSettings:
    base = {"name": "t", "output_dir": tmp_path / "reports" / "t", "tracking_uri": store["uri"],
            "reps": 500}  # fmt: skip
    return ReportSettings(**(base | kw))


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    path = build_report(settings(store, out))
    return path, path.read_text()


def summary(text: str) -> list[str]:
    """The bullet lines of the report's "Winners per load pattern" section."""
    section = text.split("\n## Winners per load pattern\n", 1)[1].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("- ")]


def first_screen(text: str) -> str:
    """What the report says before its table of contents."""
    return text.split("**Contents:**")[0]


def table_rows(text: str, heading: str) -> list[tuple[int, str]]:
    """(rank, algorithm) rows of the first table under ``heading``."""
    section = text.split(f"\n{heading}\n", 1)[1]
    rows = section.lstrip("\n").split("\n\n")[0].splitlines()[2:]
    return [(int(r.split("|")[1]), r.split("|")[2].strip()) for r in rows]


def test_first_screen_is_a_verdict_and_an_algorithm_by_pattern_table(report):
    _, text = report
    top = first_screen(text)
    verdict = top.split("\n\n")[1]
    # dqn leads on spike, ppo on steady: over two patterns of five seeds a permutation test
    # cannot tell them apart overall (a bootstrap of P(X>Y) used to crown ppo)
    assert verdict.startswith("**ppo** and **dqn** cannot be told apart overall; ")
    # ppo beats every other algorithm in all five seeds on steady: p = 2/252 for each pair,
    # below 0.05/3 (Holm over the two patterns and the overall claim)
    assert "clear winners per load pattern: ppo on steady" in verdict
    assert "no single winner on spike" in verdict
    assert "Each cell rests on 5 seeds" in verdict  # the seed-count caveat
    table = [line for line in top.splitlines() if line.startswith("| ")]
    assert table[0] == "| algorithm | spike | steady | overall (normalised) |"
    rows = {r.split(" | ")[0].strip("| "): r.split(" | ")[1:] for r in table[2:]}
    assert list(rows) == ["ppo", "dqn", "threshold", "random"]  # by overall rank, then IQM
    # spike: dqn and ppo tie (both rank 1, starred); steady: ppo alone
    assert rows["ppo"][0].endswith("★") and rows["dqn"][0].endswith("★")
    assert rows["ppo"][1].startswith("**-5.200 [") and rows["ppo"][1].endswith("★")
    assert "★" not in rows["dqn"][1] and "★" not in rows["threshold"][0]
    assert "Zero-width" not in top  # every cell here varies


def test_winner_lines_name_every_tied_contender_and_crown_none(report):
    _, text = report
    lines = summary(text)
    spike = next(line for line in lines if line.startswith("- **spike**"))
    assert spike.startswith(
        "- **spike**: **dqn** and **ppo** share rank 1 (none was shown better than another); "
        "IQM return: **dqn** -13.00 ["
    )
    assert "highest IQM" not in text
    steady = next(line for line in lines if line.startswith("- **steady**"))
    assert steady.startswith("- **steady**: **ppo** wins, IQM return -5.200 [")
    assert "cannot be told apart" not in steady
    overall = next(line for line in lines if line.startswith("- **overall**"))
    assert overall.startswith("- **overall**: **ppo** and **dqn** share rank 1")
    assert "normalised score" in overall


def test_ranking_per_load_pattern(report):
    _, text = report
    assert table_rows(text, "### autoscaling/steady") == [
        (1, "ppo"), (2, "dqn"), (3, "threshold"), (4, "random")
    ]  # fmt: skip
    assert table_rows(text, "### autoscaling/spike") == [
        (1, "dqn"), (1, "ppo"), (3, "threshold"), (4, "random")
    ]  # fmt: skip


def test_every_section_and_image_in_markdown_and_html(report):
    path, text = report
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Winners per load pattern", "## What was compared", "## Per load pattern",
        "## Outlier runs", "## Overall",
        "## Probability of improvement", "## Learning curves", "## Decisions", "## Every run",
        "## Definitions",
    ]  # fmt: skip
    assert "- outlier runs: 0" in text and "None: no run lies more than 5 robust" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(images) == sorted(
        [
            "intervals.png", "intervals_overall.png", "probability_of_improvement_overall.png",
            "performance_profiles.png", "probability_of_improvement.png",
            "learning_curves_autoscaling.png", "decisions_autoscaling_spike.png",
            "decisions_autoscaling_steady.png",
        ]
    )  # fmt: skip
    for name in images:
        assert (path.parent / name).read_bytes()[:4] == b"\x89PNG"
    page = (path.parent / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(images)
    assert not re.search(r'src="(?!data:)', page)  # self-contained: no external image
    for heading in headings:  # each reachable from the table of contents
        anchor = heading[3:].lower().replace(" ", "-")
        assert f'<h2 id="{anchor}">{heading[3:]}</h2>' in page
        assert f'<a href="#{anchor}">{heading[3:]}</a>' in page
    assert "<strong>dqn</strong> and <strong>ppo</strong> share rank 1" in page


def test_scores_csv_has_one_row_per_used_run(report, store):
    path, text = report
    scores = pd.read_csv(path.parent / "scores.csv")
    assert len(scores) == 40
    assert scores["run_id"].is_unique and store["older"] not in set(scores["run_id"])
    assert scores["score"].max() < 0  # none of the left-out runs (score 500, 99) slipped in
    cell = scores[(scores["load"] == "spike") & (scores["algo"] == "ppo")]
    assert sorted(cell["score"]) == sorted(SCORES[("spike", "ppo")])
    assert list(scores.columns[:7]) == [
        "run_id",
        "run_name",
        "env",
        "load",
        "algo",
        "seed",
        "score",
    ]
    left_out = "left out: 2 not finished, 1 older runs of the same configuration, 1 pruned, "
    assert left_out + "1 without test/mean_return" in text


def test_every_compared_run_is_one_click_from_its_mlflow_page(report):
    path, text = report
    scores = pd.read_csv(path.parent / "scores.csv")
    section = text.split("## Every run", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"\[(-?[\d.]+)\]\(([^)]+)\)", section)
    by_run = {url.rsplit("/runs/", 1)[1].split("?")[0]: cell for cell, url in linked}
    assert set(by_run) == set(scores["run_id"])  # every compared run, and only those
    for row in scores.itertuples():
        assert float(by_run[row.run_id]) == pytest.approx(row.score, abs=1e-3)
        assert f"]({row.mlflow_url})" in section  # the same URL as scores.csv
    steady = section.split("### Runs: autoscaling/steady", 1)[1].split("###", 1)[0]
    assert [r.split("|")[1].strip() for r in steady.splitlines() if r.startswith("| ")][2:] == [
        "ppo", "dqn", "threshold", "random"
    ]  # best first  # fmt: skip


def test_report_is_logged_as_a_report_run(report, store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("rlbench")
    runs = client.search_runs(
        [exp.experiment_id], "tags.`rlbench.kind` = 'report' and tags.`rlbench.report.name` = 't'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = {f.path for f in client.list_artifacts(runs[0].info.run_id)}
    assert {"report.md", "report.html", "scores.csv", "intervals.png"} <= logged
    run_id, exp_id = runs[0].info.run_id, exp.experiment_id
    page = (
        f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"
    )
    assert f"MLflow run [`{run_id}`]({page})" in report[1]
    runs_view = f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    assert f"[runs view]({runs_view})" in report[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"experiment": "empty"}, "experiment 'empty' has no finished training runs"),
        ({"experiment": "absent"}, "no MLflow experiment 'absent' in sqlite:///"),
        ({"metric": "eval/nope"}, "metric='eval/nope' was logged by none of the 47 runs of "
                                  "experiment 'rlbench'; their metrics: test/cost, "),
        ({"filter": "tags.benchmark = 'none'"}, "with filter \"tags.benchmark = 'none'\" has no "
                                                 "finished training runs"),
        ({"tracking_uri": "http://127.0.0.1:9"}, "MLflow tracking server http://127.0.0.1:9 is "
                                                  "unreachable"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_error_and_writes_nothing(store, tmp_path, overrides, message):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["uri"])
    if client.get_experiment_by_name("empty") is None:
        client.create_experiment("empty")
    with pytest.raises(UserError) as err:
        build_report(settings(store, tmp_path, **overrides))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_missing_store_file_is_an_error_not_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'nothing.db'}"
    with pytest.raises(UserError, match="no MLflow store at"):
        build_report(ReportSettings(tracking_uri=uri, output_dir=tmp_path / "r"))
    assert not (tmp_path / "nothing.db").exists()


def test_a_failure_while_writing_keeps_the_previous_report(store, tmp_path, monkeypatch):
    out = tmp_path / "reports" / "t"
    out.mkdir(parents=True)
    (out / "report.md").write_text("previous report\n")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("rlbench.results.plots.plot_decisions", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(settings(store, tmp_path, log_to_mlflow=False))
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["t"]  # no temporary folder
    assert (out / "report.md").read_text() == "previous report\n"


def test_cli_prints_the_report_path_and_errors_in_one_line(store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exe = str(Path(sys.executable).parent / "rlbench-report")
    common = [f"tracking.uri={store['uri']}", "bootstrap.reps=200", "log_to_mlflow=false"]
    done = subprocess.run(
        [exe, *common, "name=cli"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "outputs" / "reports" / "cli" / "report.md"
    assert done.stdout.strip().splitlines()[-1] == f"report: {path}"
    assert path.read_text().startswith("# rlbench report: cli\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # Hydra wrote nothing else

    done = subprocess.run(
        [exe, *common, "tracking.experiment=absent"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    # one error line (a loaded machine may add a "still running" progress line before it)
    lines = [x for x in done.stderr.splitlines() if "still running after" not in x]
    assert len(lines) == 1 and lines[0].startswith("error: no MLflow experiment 'absent'")


def test_summary_says_when_no_two_algorithms_differ():
    # a and b: the same three scores (P = 0.5 exactly); random lower but within the spread
    values = {"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0], "random": [0.5, 1.5, 2.5]}
    scores = pd.DataFrame(
        [{"env": "autoscaling", "load": "steady", "algo": algo, "seed": seed, "score": v}
         for algo, vs in values.items() for seed, v in enumerate(vs)]
    )  # fmt: skip
    data = ReportData(runs=pd.DataFrame(), scores=scores, excluded={})
    lines = summary_lines(analyse(data, ReportSettings(reps=500)), ReportSettings())
    assert lines[0].startswith(
        "- **steady**: no two of the 3 algorithms can be told apart on steady; IQM return: **a** "
    )


@pytest.mark.slow
def test_report_and_verify_on_real_tiny_training_runs(mlflow_store, tmp_path):
    """Twelve real runs (threshold, random, static × 4 seeds on spike), reported and verified.

    On spike the threshold rule scales with the load, random wanders and static keeps 10
    instances under a 2000-request load: every seed of threshold beats every seed of the
    others, so P = 1 and p = 2/70 by the permutation test (with 3 seeds each it would be 2/20:
    nothing could be shown). Random beats static in three seeds of four (seed 3 scores -2354
    against static's -2328): not shown, so both rank 2.
    """
    from rlbench.results.verify import main as verify_main

    exe = str(Path(sys.executable).parent / "rlbench-train")
    args = ["-m", "algo=threshold,random,static", "seed=0,1,2,3", "env.load=spike",
            "train.total_steps=600", "train.eval_every=300", "eval.episodes=3",
            "train.progress=off", *mlflow_store.overrides()]  # fmt: skip
    done = subprocess.run([exe, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    path = build_report(
        ReportSettings(tracking_uri=mlflow_store.uri, output_dir=tmp_path / "r", reps=500)
    )
    text = path.read_text()
    spike = next(line for line in summary(text) if line.startswith("- **spike**"))
    assert spike.startswith("- **spike**: **threshold** wins, IQM return ")
    assert table_rows(text, "### autoscaling/spike") == [
        (1, "threshold"), (2, "random"), (2, "static")
    ]  # fmt: skip
    assert "decisions_autoscaling_spike.png" in text
    assert verify_main(["--tracking-uri", mlflow_store.uri]) == 0


def test_a_store_of_runs_logged_before_the_split_still_reports(mlflow_template, tmp_path):
    """Old runs logged validation and test under one name, ``eval/mean_return``, its last point
    the score: the report ranks them by that point and draws the curve without it."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    client = MlflowClient(f"sqlite:///{db}")
    exp_id = client.create_experiment("rlbench", artifact_location=(tmp_path / "art").as_uri())
    for (load, algo), values in SCORES.items():
        if load == "steady":
            for seed, score in enumerate(values[:4]):  # 4 seeds: a permutation test can tell
                log_run(client, exp_id, tmp_path, algo=algo, load=load, seed=seed, score=score,
                        trajectory=False, legacy=True)  # fmt: skip
    path = build_report(
        ReportSettings(
            name="old",
            output_dir=tmp_path / "r",
            tracking_uri=f"sqlite:///{db}",
            reps=100,
            log_to_mlflow=False,
        )
    )
    text = path.read_text()
    assert table_rows(text, "### autoscaling/steady") == [
        (1, "ppo"), (2, "dqn"), (3, "threshold"), (4, "random")
    ]  # fmt: skip
    scores = pd.read_csv(path.parent / "scores.csv")
    assert sorted(scores[scores["algo"] == "ppo"]["score"]) == [-5.3, -5.2, -5.1, -5.0]
    assert list(scores["cost"]) == list(-scores["score"] / 2)  # eval/cost read as the cost
    assert "learning_curves_autoscaling.png" in text


def test_runs_scored_on_their_best_weights_are_their_own_entry_and_said_so(
    mlflow_template, tmp_path
):
    """eval.policy=best runs of dqn are ``dqn@best``, ranked beside ``dqn``, never pooled."""
    from mlflow.tracking import MlflowClient

    from rlbench.tracking.schema import SCORED_POLICY_TAG

    db = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    client = MlflowClient(f"sqlite:///{db}")
    exp_id = client.create_experiment("rlbench", artifact_location=(tmp_path / "art").as_uri())
    files = tmp_path / "files"
    files.mkdir()
    for seed in range(5):
        for algo, score, scored in (
            ("random", -40.0 - seed, "final"), ("dqn", -20.0 - seed, "final"),
            ("dqn", -5.0 - seed, "best"),
        ):  # fmt: skip
            tags = {SCORED_POLICY_TAG: scored, "rlbench.run_key": f"{algo}-{scored}-{seed}"}
            log_run(client, exp_id, files, algo=algo, load="steady", seed=seed, score=score,
                    tags=tags)  # fmt: skip
    text = build_report(settings({"uri": f"sqlite:///{db}"}, tmp_path)).read_text()
    ranked = table_rows(text, "### autoscaling/steady")
    assert [name for _, name in ranked] == ["dqn@best", "dqn", "random"]
    assert "- `dqn@best`: scored on the weights that validated best during training" in text


def test_the_first_page_says_when_the_runs_were_made_by_different_code():
    """A dirty run beside clean ones used to be compared silently (and, newest, could stand
    for its configuration): the facts line names the commits and says 'mixed'."""
    from rlbench.results.report import ReportData, _code_line

    runs = pd.DataFrame({
        "run_id": ["a", "b", "c"],
        "tags.git.commit": ["c0ae0c0123", "c0ae0c0123", "c0ae0c0123"],
        "tags.git.dirty": ["false", "false", "true"],
    })  # fmt: skip
    scores = pd.DataFrame({"run_id": ["a", "b", "c"]})
    (line,) = _code_line(ReportData(runs=runs, scores=scores, excluded={}))
    assert line.startswith("- code: **mixed**: c0ae0c01 (2 runs), c0ae0c01 with uncommitted")
    clean = ReportData(runs=runs.iloc[:2], scores=scores.iloc[:2], excluded={})
    assert _code_line(clean) == ["- code: every run at commit c0ae0c01 (2 runs)"]


def section(text: str, heading: str) -> str:
    """The text of the report's ``## heading`` section, without its heading."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0].strip()


def test_every_environment_says_what_its_aggregates_and_its_return_mean():
    """The report heads each aggregate with what the environment declares (``info_units``)
    and says what its return is (``return_meaning``): one declaration per environment, so
    none may be missing."""
    from rlbench.envs import ENVIRONMENTS, env_class

    for env_id in ENVIRONMENTS:
        core = env_class(env_id).core_cls
        assert set(core.info_units) == set(core.info_aggregates), env_id
        for key, unit in core.info_units.items():  # a name and, in brackets, unit and summary
            assert unit.endswith(")") and "(" in unit and "|" not in unit, (env_id, key, unit)
        assert core.return_meaning and "better" in core.return_meaning, env_id


def test_autoscaling_report_heads_its_aggregates_with_units_and_says_what_its_return_is(report):
    _, text = report
    assert "| algorithm | instance cost ($ per episode) |" in text
    assert "On autoscaling the return is minus dollars" in first_screen(text)
    decisions = section(text, "Decisions")
    assert decisions.startswith("One evaluation episode per algorithm on autoscaling (the run")
    assert "none" not in decisions  # every environment here has decision panels


@pytest.fixture(scope="module")
def recommender_report(mlflow_template, tmp_path_factory):
    """A report of recommender runs only (no load patterns, no decision panels)."""
    from mlflow.tracking import MlflowClient

    from rlbench.envs.recommender import RecommenderCore

    root = tmp_path_factory.mktemp("recommender-store")
    shutil.copyfile(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("rlbench", artifact_location=(root / "art").as_uri())
    for algo, base in (("qlearning", 50.0), ("random", 20.0)):
        for seed in range(4):
            aggregates = {key: 0.1 * (seed + 1) for key in RecommenderCore.info_aggregates}
            log_run(client, exp_id, root, algo=algo, load=None, seed=seed, score=base + seed,
                    trajectory=False, env="recommender", env_id="rlbench/Recommender-v0",
                    aggregates=aggregates)  # fmt: skip
    settings = {"name": "rec", "output_dir": root / "r", "tracking_uri": uri, "reps": 200}
    path = build_report(ReportSettings(**settings, log_to_mlflow=False))
    return path.read_text(), RecommenderCore


def test_a_recommender_report_speaks_of_recommendations_not_of_autoscaling(recommender_report):
    text, core = recommender_report
    assert "autoscaling" not in text and "dollars" not in text
    assert "On recommender the return is the seed's reward summed over a session" in first_screen(
        text
    )
    header = next(line for line in text.splitlines() if line.startswith("| algorithm | liked"))
    assert header == "| algorithm | " + " | ".join(core.info_units.values()) + " |"
    decisions = section(text, "Decisions")
    assert "demand against capacity" not in decisions  # no panel, so no panel described
    assert decisions.endswith("recommender has none.")


def test_environments_are_found_by_their_logged_id_or_their_config():
    from rlbench.envs.gym_scaling_compat import GymScalingCompatCore
    from rlbench.envs.scheduler import ScriptSchedulerCore
    from rlbench.results.report import env_cores

    scores = pd.DataFrame({"env": ["scheduler", "CartPole-v1", "mine"]})
    runs = pd.DataFrame({"env": ["mine"], "params.env.id": ["rlbench/GymScalingCompat-v0"]})
    cores = env_cores(ReportData(runs=runs, scores=scores, excluded={}))
    assert cores == {
        "CartPole-v1": None, "mine": GymScalingCompatCore, "scheduler": ScriptSchedulerCore
    }  # fmt: skip
