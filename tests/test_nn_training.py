"""``ctp-train``: recipes, resumable and reproducible runs, the simulator's ranges per recipe."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ctp_nipype.cli import train as train_cli
from ctp_nipype.io import append_table_row
from ctp_nipype.nn import logs
from ctp_nipype.nn import training
from ctp_nipype.nn.loss import reconstruct_tissue
from ctp_nipype.nn.weights import load_model
from ctp_nipype.sims.simulate import TRAINING_RANGES

REPO = Path(__file__).resolve().parents[1]


def _tiny_recipe(**changes):
    recipe = {
        "name": "tiny",
        "seed": 5,
        "batch_size": 8,
        "total_steps": 6,
        "time_budget_minutes": None,
        "learning_rate": 1e-3,
        "warmup_fraction": 0.2,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "validation_every_steps": 3,
        "checkpoint_every_minutes": 10,
        "n_validation_curves": 16,
        "validation_seed": 9,
        "ranges": {"t_a_zero_fraction": 0.5},
        "loss_weights": {"bad": 1.0, "local_aif": 900.0, "tissue": 28.0, "smooth": 1000.0, "residue": 20.0},
        "model": {"d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "dim_feedforward": 16},
    }
    recipe.update(changes)
    return recipe


def _state(path):
    model = load_model(path, device="cpu")
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    recipe = _tiny_recipe()
    whole = training.train(recipe, tmp_path / "whole", progress=False)
    cut = training.train(recipe, tmp_path / "split", progress=False, max_steps=4)
    resumed = training.train(recipe, tmp_path / "split", resume=True, progress=False)
    assert whole["step"] == resumed["step"] == 6
    assert whole["finished"] and resumed["finished"] and not cut["finished"]  # max_steps is not the run's end
    a, b = _state(tmp_path / "whole" / "last.safetensors"), _state(tmp_path / "split" / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert whole["val_cbf_rmse"] == pytest.approx(resumed["val_cbf_rmse"], rel=1e-6)


def test_the_log_has_a_validation_row_at_every_validation_step(tmp_path):
    # validation every 3 steps, loss rows every 25: the validation rows must still be written
    training.train(_tiny_recipe(), tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "log.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert list(rows[0]) == list(training.LOG_COLUMNS)
    assert [int(r["step"]) for r in rows] == [3, 6]
    for row in rows:
        assert float(row["val_cbf_rmse"]) > 0 and 0 < float(row["val_bad_rmse"])
    assert (tmp_path / "run" / "best.safetensors").exists()
    # nn.logs (benchmarks/studies/learning_curve.py) reads the same log: the weighted terms relative to the BAD term
    ratios = logs.term_ratios(logs.read_loss_rows(tmp_path / "run"), 1, 6)
    assert ratios["loss_bad"] == 1.0 and ratios["n_rows"] == 2
    assert all(ratios[k] > 0 for k in logs.TERMS)
    assert "| 1-6 |" in logs.ratio_lines(logs.read_loss_rows(tmp_path / "run"))


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    recipe = _tiny_recipe()
    model = training.PerfusionTransformer(training.ModelConfig.from_dict(recipe["model"]))
    weights = training.LossWeights(**recipe["loss_weights"])
    batch = training.simulate_batch(32, seed=1, step=0, ranges=training.simulation_ranges(recipe))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(batch.tissue, batch.aif, batch.frame_times)
        loss, _ = training.perfusion_loss(out, batch.target(), batch.dt, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_a_recipe_overrides_the_simulation_ranges():
    assert training.simulation_ranges({}) == TRAINING_RANGES
    ranges = training.simulation_ranges({"ranges": {"t_a_zero_fraction": 0.5, "snr_db": [5, 30]}})
    assert ranges.t_a_zero_fraction == 0.5 and ranges.snr_db == (5, 30)
    assert ranges.cbf == TRAINING_RANGES.cbf
    with pytest.raises(ValueError, match="Unknown simulation range"):
        training.simulation_ranges({"ranges": {"t_a_share": 0.5}})
    with pytest.raises(ValueError, match="t_a_zero_fraction"):
        training.simulation_ranges({"ranges": {"t_a_zero_fraction": 1.5}})


def test_the_validation_set_follows_the_recipe_ranges():
    def peak_ratios(t_a_zero_fraction):
        ranges = training.simulation_ranges({"ranges": {"t_a_zero_fraction": t_a_zero_fraction}})
        batches = training.validation_set(64, seed=9, ranges=ranges)
        return torch.cat([b.local_aif.max(-1).values / b.aif.max(-1).values for b in batches])

    # without dispersion the local AIF is the shifted global AIF: the same peak up to the frame sampling
    # (up to one 2 s frame off the peak: ratios 0.96-1.13 measured)
    undispersed = peak_ratios(1.0)
    assert abs(float(undispersed.median()) - 1) < 0.02 and undispersed.min() > 0.85 and undispersed.max() < 1.2
    # dispersion (T_A 1-4 s) lowers and widens the peak (median 0.81 measured)
    assert peak_ratios(0.0).median() < 0.9


@pytest.mark.parametrize(
    "name", training.available_recipes() + sorted(str(p) for p in (REPO / "benchmarks" / "recipes").glob("*.json"))
)
def test_shipped_recipes_resolve(name):
    recipe = training.load_recipe(name)
    training.simulation_ranges(recipe)
    training.LossWeights(**recipe["loss_weights"])
    training.ModelConfig.from_dict(recipe.get("model", {}))


def test_a_recipe_field_with_a_typo_is_refused(tmp_path):
    recipe = training.load_recipe("cpu")
    for broken in ({**recipe, "learning_rat": 1e-3},
                   {**recipe, "stages": [recipe["stages"][0], {**recipe["stages"][1], "time_budget": 10}]}):
        path = tmp_path / "typo.json"
        path.write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(ValueError, match=r"unknown field\(s\) \['(learning_rat|time_budget)'\]") as error:
            training.load_recipe(path)
        assert str(path) in str(error.value)
    assert "(stage 2)" in str(error.value)
    path.write_text('{"name": "cpu",}', encoding="utf-8")
    with pytest.raises(ValueError, match="is not valid JSON"):
        training.load_recipe(path)


def test_cli_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path, capsys):
    recipe_file = tmp_path / "tiny.json"
    recipe_file.write_text(json.dumps(_tiny_recipe()), encoding="utf-8")
    out = tmp_path / "run"
    assert train_cli.main(["--recipe", str(recipe_file), "--out", str(out), "--max-steps", "1", "--no-progress"]) == 0
    assert train_cli.main(["--recipe", str(recipe_file), "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_cli.main(["--recipe", str(recipe_file), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "Cannot resume" in capsys.readouterr().err
    assert train_cli.main(["--recipe", "no-such-recipe", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown recipe" in capsys.readouterr().err


def test_a_run_continues_from_init_weights(tmp_path):
    # phase 1 trains a tiny network; phase 2 starts from its weights, not from a random initialisation
    training.train(_tiny_recipe(), tmp_path / "phase1", progress=False)
    first = tmp_path / "phase1" / "last.safetensors"
    recipe_file = tmp_path / "phase2.json"
    recipe_file.write_text(json.dumps(_tiny_recipe(seed=6, init_weights="phase1/last.safetensors")), encoding="utf-8")
    recipe = training.load_recipe(recipe_file)
    assert recipe["init_weights"] == str(first.resolve())  # relative to the recipe file's folder
    # zero steps would write nothing: a learning rate of 0 keeps the loaded weights through one step
    training.train({**recipe, "learning_rate": 0.0}, tmp_path / "phase2", progress=False, max_steps=1)
    start, loaded = _state(first), _state(tmp_path / "phase2" / "last.safetensors")
    for name in start:
        torch.testing.assert_close(loaded[name], start[name], rtol=0, atol=0, msg=name)
    card = json.loads((tmp_path / "phase2" / "last.json").read_text(encoding="utf-8"))["card"]
    assert card["init_weights"] == str(first.resolve())
    # and it trains on from there
    moved = training.train(recipe, tmp_path / "phase2b", progress=False, max_steps=2)
    assert moved["step"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(start.values(),
                                                     _state(tmp_path / "phase2b" / "last.safetensors").values()))


def test_init_weights_must_match_the_architecture(tmp_path):
    training.train(_tiny_recipe(), tmp_path / "phase1", progress=False, max_steps=3)
    wider = _tiny_recipe(init_weights=str(tmp_path / "phase1" / "last.safetensors"),
                         model={"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
                                "dim_feedforward": 16})
    with pytest.raises(ValueError, match="architecture"):
        training.train(wider, tmp_path / "phase2", progress=False, max_steps=1)
    with pytest.raises(ValueError, match="does not exist"):
        training.train(_tiny_recipe(init_weights=str(tmp_path / "missing.safetensors")), tmp_path / "phase3",
                       progress=False, max_steps=1)


def test_cli_init_weights(tmp_path, capsys):
    training.train(_tiny_recipe(), tmp_path / "phase1", progress=False, max_steps=3)
    first = tmp_path / "phase1" / "last.safetensors"
    recipe_file = tmp_path / "still.json"
    recipe_file.write_text(json.dumps(_tiny_recipe(learning_rate=0.0)), encoding="utf-8")
    out = tmp_path / "phase2"
    args = ["--recipe", str(recipe_file), "--out", str(out), "--max-steps", "1", "--no-progress"]
    assert train_cli.main(args + ["--init-weights", str(first)]) == 0
    card = json.loads((out / "last.json").read_text(encoding="utf-8"))["card"]
    assert card["init_weights"] == str(first.resolve())
    for name, value in _state(first).items():
        torch.testing.assert_close(_state(out / "last.safetensors")[name], value, rtol=0, atol=0, msg=name)
    assert train_cli.main(args + ["--resume", "--init-weights", str(first)]) == 2
    assert "cannot be combined with --resume" in capsys.readouterr().err


def test_code_commit_says_when_the_checkout_has_uncommitted_changes(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n", encoding="utf-8")
    git("add", "code.py")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert training.code_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n", encoding="utf-8")
    assert training.code_commit(tmp_path) == f"{head}-dirty"
    assert training.code_commit(tmp_path / "not-a-folder") == "unknown"


def _staged_recipe(**changes):
    second = {"name": "second", "seed": 6, "learning_rate": 5e-4, "total_steps": 4,
              "ranges": {"t_a_zero_fraction": 0.5, "alpha_one_fraction": 0.3}}
    return _tiny_recipe(name="staged", total_steps=5, stages=[{"name": "first"}, second], **changes)


def test_a_staged_run_equals_its_stages_run_by_hand(tmp_path):
    staged = training.train(_staged_recipe(), tmp_path / "staged", progress=False)
    assert staged["stages"] == 2 and staged["step"] == 5 + 4
    first, second = training.stage_recipes(_staged_recipe())
    assert (first["name"], first["seed"], first["total_steps"]) == ("staged:first", 5, 5)
    assert (second["name"], second["seed"]) == ("staged:second", 6)
    assert second["ranges"]["alpha_one_fraction"] == 0.3
    # by hand: stage 1, then stage 2 from stage 1's best weights
    training.train(first, tmp_path / "hand1", progress=False)
    training.train({**second, "init_weights": str(tmp_path / "hand1" / "best.safetensors")}, tmp_path / "hand2",
                   progress=False)
    for mine, theirs in ((tmp_path / "staged" / "stage2" / "best.safetensors", tmp_path / "hand2" / "best.safetensors"),
                         (tmp_path / "staged" / "best.safetensors", tmp_path / "hand2" / "best.safetensors"),
                         (tmp_path / "staged" / "last.safetensors", tmp_path / "hand2" / "last.safetensors")):
        a, b = _state(mine), _state(theirs)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    card = json.loads((tmp_path / "staged" / "best.json").read_text(encoding="utf-8"))["card"]
    assert card["recipe"] == "staged" and card["stage_recipe"] == "staged:second"
    assert [c["recipe"] for c in card["stages"]] == ["staged:first", "staged:second"]
    assert card["init_weights"] == str((tmp_path / "staged" / "stage1" / "best.safetensors").resolve())
    with pytest.raises(FileExistsError, match="--resume"):
        training.train(_staged_recipe(), tmp_path / "staged", progress=False)
    # nn.logs (benchmarks/studies/learning_curve.py) reads the stages one after the other, counting on from stage to stage
    rows = logs.read_validation_rows(tmp_path / "staged")
    assert [(r["stage"], r["step"]) for r in rows] == [(1, 3), (1, 5), (2, 8), (2, 9)]
    with open(tmp_path / "staged" / "stage2" / "log.tsv", newline="", encoding="utf-8") as handle:
        own = next(r for r in csv.DictReader(handle, delimiter="\t") if r["step"] == "3")
    assert rows[2]["curves_seen"] == 8 * 8  # 5 steps of stage 1 and 3 of stage 2, batches of 8
    assert rows[2]["elapsed_s"] == pytest.approx(rows[1]["elapsed_s"] + float(own["elapsed_s"]))
    assert "| stage |" in logs.markdown(rows)


@pytest.mark.parametrize("stop_after", [3, 7])  # inside stage 1, inside stage 2
def test_a_staged_run_resumes_where_it_stopped(tmp_path, stop_after):
    whole = training.train(_staged_recipe(), tmp_path / "whole", progress=False)
    cut = training.train(_staged_recipe(), tmp_path / "split", progress=False, max_steps=stop_after)
    assert cut["step"] == stop_after and not (tmp_path / "split" / "best.safetensors").exists()
    resumed = training.train(_staged_recipe(), tmp_path / "split", resume=True, progress=False)
    assert resumed["step"] == whole["step"] == 9
    a, b = _state(tmp_path / "whole" / "last.safetensors"), _state(tmp_path / "split" / "last.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    # a finished run resumed again trains nothing more
    assert training.train(_staged_recipe(), tmp_path / "split", resume=True, progress=False)["step"] == 9
    with pytest.raises(FileNotFoundError, match="Cannot resume"):
        training.train(_staged_recipe(), tmp_path / "nothing", resume=True, progress=False)


def test_a_time_budget_is_shared_out_between_stages(tmp_path):
    recipe = _staged_recipe(time_budget_minutes=60)
    recipe["stages"][1]["time_budget_minutes"] = 30
    assert [s["time_budget_minutes"] for s in training.stage_recipes(recipe, 45)] == pytest.approx([30.0, 15.0])
    training.train(recipe, tmp_path / "run", progress=False, max_steps=1, time_budget_minutes=45)
    stage1 = json.loads((tmp_path / "run" / "stage1" / "recipe.json").read_text(encoding="utf-8"))
    assert stage1["time_budget_minutes"] == pytest.approx(30.0)
    with pytest.raises(ValueError, match="every stage"):
        training.stage_recipes(_staged_recipe(), 5)


def test_staged_recipes_are_checked():
    with pytest.raises(ValueError, match="list of objects"):
        training.stage_recipes(_tiny_recipe(stages=["first"]))
    with pytest.raises(ValueError, match="previous stage"):
        training.stage_recipes(_tiny_recipe(stages=[{}, {"init_weights": "shipped"}]))
    with pytest.raises(ValueError, match="do not nest"):
        training.stage_recipes(_tiny_recipe(stages=[{"stages": [{}]}]))


def test_the_cpu_recipe_is_two_stages_within_two_hours():
    stages = training.stage_recipes(training.load_recipe("cpu"))
    assert [s["name"] for s in stages] == ["cpu:paper-ranges", "cpu:exponential"]
    assert sum(s["time_budget_minutes"] for s in stages) <= 120
    assert stages[0].get("ranges") is None and stages[1]["ranges"]["alpha_one_fraction"] == 0.3
    # the shipped weights are the run's moving average of the weights (best_ema.safetensors)
    assert all(s["ema_decay"] == 0.999 for s in stages)


def test_the_moving_average_follows_its_formula_and_leaves_training_unchanged(tmp_path):
    # one and two steps of the same run (the data of a step depend on (seed, step) only)
    decay = 0.9
    for steps in (1, 2):
        training.train(_tiny_recipe(ema_decay=decay), tmp_path / f"ema{steps}", progress=False, max_steps=steps)
    training.train(_tiny_recipe(), tmp_path / "plain", progress=False, max_steps=2)
    first, second = _state(tmp_path / "ema1" / "last.safetensors"), _state(tmp_path / "ema2" / "last.safetensors")
    average = _state(tmp_path / "ema2" / "last_ema.safetensors")
    plain = _state(tmp_path / "plain" / "last.safetensors")
    moved = 0
    for name in second:
        # the average starts at the first step's weights, then moves 1 - decay of the way each step
        torch.testing.assert_close(average[name], decay * first[name] + (1 - decay) * second[name], msg=name)
        # watching does not change what is trained
        torch.testing.assert_close(second[name], plain[name], rtol=0, atol=0, msg=name)
        moved += not torch.equal(average[name], second[name])
    assert moved > 0
    after_one = _state(tmp_path / "ema1" / "last_ema.safetensors")
    for name in first:
        torch.testing.assert_close(after_one[name], first[name], rtol=0, atol=0, msg=name)


def test_the_moving_average_is_validated_logged_and_resumed(tmp_path):
    recipe = _tiny_recipe(ema_decay=0.8)
    training.train(recipe, tmp_path / "whole", progress=False)
    training.train(recipe, tmp_path / "split", progress=False, max_steps=4)
    training.train(recipe, tmp_path / "split", resume=True, progress=False)
    a, b = _state(tmp_path / "whole" / "last_ema.safetensors"), _state(tmp_path / "split" / "last_ema.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    with open(tmp_path / "whole" / "log.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(r["step"]) for r in rows] == [3, 6]
    for row in rows:
        assert float(row["ema_val_cbf_rmse"]) > 0 and float(row["ema_val_cbf_rmse"]) != float(row["val_cbf_rmse"])
    table = logs.markdown(logs.read_validation_rows(tmp_path / "whole")).splitlines()
    assert table[0].endswith("EMA val CBF RMSE | EMA val BAD RMSE (s) |")
    assert table[2].count("|") == table[0].count("|") and f"{float(rows[0]['ema_val_cbf_rmse']):.2f}" in table[2]
    logs.plot(logs.read_validation_rows(tmp_path / "whole"), tmp_path / "curve.png")
    card = json.loads((tmp_path / "whole" / "best_ema.json").read_text(encoding="utf-8"))["card"]
    assert card["ema_decay"] == 0.8 and card["val_cbf_rmse"] == pytest.approx(
        min(float(r["ema_val_cbf_rmse"]) for r in rows), rel=1e-5)
    # without ema_decay nothing of it is written
    training.train(_tiny_recipe(), tmp_path / "plain", progress=False)
    assert not list((tmp_path / "plain").glob("*_ema*"))
    with pytest.raises(ValueError, match="ema_decay"):
        training.train(_tiny_recipe(ema_decay=1.0), tmp_path / "bad", progress=False)


def test_a_staged_run_passes_its_last_stage_moving_average_on(tmp_path):
    training.train(_staged_recipe(ema_decay=0.8), tmp_path / "staged", progress=False)
    for name in ("best_ema", "last_ema"):
        a = _state(tmp_path / "staged" / f"{name}.safetensors")
        b = _state(tmp_path / "staged" / "stage2" / f"{name}.safetensors")
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_a_log_started_by_an_older_ctp_train_keeps_its_columns(tmp_path):
    # a run resumed after an upgrade that added log columns: rows must still match the file's header
    log = tmp_path / "log.tsv"
    old_columns = training.LOG_COLUMNS[:15]
    log.write_text("\t".join(old_columns) + "\n", encoding="utf-8")
    append_table_row(log, {"step": 25, "curves_seen": 200, "elapsed_s": 9.5, "loss": 1.5, "ema_val_cbf_rmse": 3.0},
                     training.LOG_COLUMNS)
    with open(log, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert list(rows[0]) == list(old_columns) and rows[0]["step"] == "25" and rows[0]["loss"] == "1.5"
    assert logs.read_loss_rows(tmp_path)[0]["step"] == 25.0


@pytest.mark.parametrize("normalisation", ["aif_peak", "tissue_amplitude"])
def test_a_batch_closes_the_physics_in_the_network_units(normalisation):
    """Noise free, the encoder's input equals the reconstruction from the true local AIF and residue targets,
    and the residue targets give back the simulated CBF, in either normalisation."""
    import numpy as np

    from ctp_nipype.sims.simulate import simulate_curves

    sim = simulate_curves(32, np.random.default_rng(3), frame_interval=1.0, n_frames=60, snr_db=np.inf)
    batch = training.batch_from_simulation(sim, normalisation)
    rebuilt = reconstruct_tissue(batch.local_aif.double(), batch.residue.double(), batch.dt)
    # the simulator convolves on a fine grid, the network's reconstruction on the frames: a few % per curve
    error = (rebuilt - batch.tissue).abs().max(-1).values / batch.tissue.abs().max(-1).values.clamp_min(1e-6)
    assert float(error.max()) < 0.08
    np.testing.assert_allclose(training.cbf_from_residue(batch.residue, batch.residue_unit).numpy(), sim.cbf,
                               rtol=1e-4, atol=1e-3)
    if normalisation == "tissue_amplitude":  # every curve reaches the encoder at the same height
        running = (batch.tissue[:, :-2] + batch.tissue[:, 1:-1] + batch.tissue[:, 2:]) / 3
        heights = running.max(-1).values[torch.from_numpy(sim.cbf > 1)]
        torch.testing.assert_close(heights, torch.full_like(heights, 0.5), rtol=1e-4, atol=1e-4)


def test_the_curve_weights_give_the_aif_peak_loss_in_either_normalisation():
    """The same physical estimate (local AIF, K, BAD) costs the same in both normalisations."""
    import numpy as np

    from ctp_nipype.sims.simulate import simulate_curves

    sim = simulate_curves(16, np.random.default_rng(5), frame_interval=1.5, n_frames=50)
    weights = training.LossWeights(bad=1.0, local_aif=500.0, tissue=14.0, smooth=300.0, residue=20.0)
    losses = {}
    for normalisation in ("aif_peak", "tissue_amplitude"):
        batch = training.batch_from_simulation(sim, normalisation)
        # an imperfect estimate: K 20% low and rippled, the local AIF 10% high, BAD 1 s late
        ripple = 1 + 0.05 * torch.cos(torch.arange(batch.residue.shape[1]) / 2.0)
        estimate_k = 0.8 * ripple * batch.residue * batch.residue_unit  # 1/s
        output = {"residue": estimate_k / batch.residue_unit, "local_aif": 1.1 * batch.local_aif,
                  "bad": batch.bad + 1.0}
        total, terms = training.perfusion_loss(output, batch.target(), batch.dt, weights)
        losses[normalisation] = (float(total), terms)
    assert losses["tissue_amplitude"][0] == pytest.approx(losses["aif_peak"][0], rel=1e-4)
    for name, value in losses["aif_peak"][1].items():
        assert losses["tissue_amplitude"][1][name] == pytest.approx(value, rel=1e-4)


def test_the_gpu_recipe_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    recipe = training.load_recipe("gpu")
    # the recipe as shipped: mixed precision is the trainer's on CUDA; large batches, threads for the simulator
    assert recipe["batch_size"] >= 1024 and recipe["time_budget_minutes"] < 8 and recipe["simulation_workers"] > 1
    assert recipe["model"]["tissue_normalisation"] == "tissue_amplitude"
    ranges = training.simulation_ranges(recipe)
    # nothing narrowed below the paper's ranges (section 2.3)
    for name in ("snr_db", "cbf", "mtt", "alpha", "t_a", "delay", "frame_interval"):
        low, high = getattr(ranges, name)
        assert low <= getattr(TRAINING_RANGES, name)[0] and high >= getattr(TRAINING_RANGES, name)[1], name
    assert ranges.n_frames[0] <= 45 and ranges.n_frames[1] >= 120 and ranges.alpha_one_fraction == 0
    tiny = {**recipe, "batch_size": 8, "n_validation_curves": 16, "simulation_workers": 2,
            "model": {**recipe["model"], "d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
                      "dim_feedforward": 16}}
    metrics = training.train(tiny, tmp_path / "gpu", device="cpu", progress=False, max_steps=3)
    assert metrics["step"] == 3 and all(torch.isfinite(torch.tensor(metrics[k])) for k in ("val_cbf_rmse", "val_loss"))
    assert load_model(tmp_path / "gpu" / "last_ema.safetensors").config.tissue_normalisation == "tissue_amplitude"


def test_simulation_workers_do_not_change_the_batches():
    one = training.simulate_batch(64, 3, 7, TRAINING_RANGES, "tissue_amplitude", workers=1)
    two = training.simulate_batch(64, 3, 7, TRAINING_RANGES, "tissue_amplitude", workers=2)
    assert torch.equal(one.tissue, two.tissue) and torch.equal(one.residue, two.residue)


def test_init_weights_may_change_the_tissue_normalisation(tmp_path):
    first = tmp_path / "first"
    training.train(_tiny_recipe(), first, progress=False, max_steps=2)
    recipe = _tiny_recipe(init_weights=str(first / "last.safetensors"),
                          model={**_tiny_recipe()["model"], "tissue_normalisation": "tissue_amplitude"})
    training.train(recipe, tmp_path / "second", progress=False, max_steps=1)
    assert load_model(tmp_path / "second" / "last.safetensors").config.tissue_normalisation == "tissue_amplitude"


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (6, 5), elements=st.floats(0.0, 50.0, width=32)))
def test_equal_residue_weights_count_a_high_residue_as_a_relative_error(residue):
    from ctp_nipype.nn.loss import EQUAL_RESIDUE_HEIGHT, equal_residue_weights

    weights = equal_residue_weights(torch.from_numpy(residue)).numpy()[:, 0]
    height = residue.max(-1)
    assert np.all((weights > 0) & (weights <= 1))
    low = height <= EQUAL_RESIDUE_HEIGHT
    assert np.all(weights[low] == 1)
    np.testing.assert_allclose(weights[~low] * height[~low] ** 2, EQUAL_RESIDUE_HEIGHT**2, rtol=1e-5)


def test_equal_curve_weighting_costs_a_curve_the_same_at_any_height():
    """With the tissue-amplitude normalisation, ten times the curve reaches the network unchanged: weighted
    'equal', the same relative error costs the same; weighted 'absolute', 100 times as much."""
    from dataclasses import replace

    from ctp_nipype.sims.simulate import simulate_curves

    sim = simulate_curves(8, np.random.default_rng(11), frame_interval=1.5, n_frames=50, snr_db=20.0)
    higher = replace(sim, tissue=10 * sim.tissue, residue=10 * sim.residue, cbf=10 * sim.cbf)
    weights = training.LossWeights(bad=1.0, local_aif=500.0, tissue=14.0, smooth=300.0, residue=20.0)
    terms = {}
    for name, simulated in (("low", sim), ("high", higher)):
        batch = training.batch_from_simulation(simulated, "tissue_amplitude")
        output = {"residue": 0.8 * batch.residue, "local_aif": 1.1 * batch.local_aif, "bad": batch.bad + 1}
        for weighting in training.CURVE_WEIGHTINGS:
            terms[name, weighting] = training.perfusion_loss(output, batch.target(weighting), batch.dt, weights)[1]
    for term in ("tissue", "smooth", "residue"):
        assert terms["high", "equal"][term] == pytest.approx(terms["low", "equal"][term], rel=1e-4)
        assert terms["high", "absolute"][term] == pytest.approx(100 * terms["low", "absolute"][term], rel=1e-4)
    with pytest.raises(ValueError, match="curve_weighting"):
        training.batch_from_simulation(sim, "tissue_amplitude").target("relative")


def test_a_recipe_trains_with_equal_curve_weighting_and_refuses_an_unknown_one(tmp_path):
    recipe = _tiny_recipe(curve_weighting="equal", model={**_tiny_recipe()["model"],
                                                          "tissue_normalisation": "tissue_amplitude"})
    metrics = training.train(recipe, tmp_path / "equal", progress=False, max_steps=2)
    assert metrics["step"] == 2 and np.isfinite(metrics["val_loss"])
    with pytest.raises(ValueError, match="curve_weighting 'relative'"):
        training.train(_tiny_recipe(curve_weighting="relative"), tmp_path / "bad", progress=False, max_steps=1)
