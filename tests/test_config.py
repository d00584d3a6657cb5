import pytest

from icldyn.config import apply_overrides, parse_value
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS, config_from_yaml


def quick(name="linreg-lsa"):
    return EXPERIMENTS[name].config("quick")


def test_overrides_are_typed_and_nested():
    cfg = apply_overrides(quick(), ["train.lr=3e-3", "task.eigenvalues=[1, 0.5, 0.25, 0.1, 0.05]", "model.mask_query=true"])
    assert cfg.train.lr == pytest.approx(3e-3)
    assert cfg.task.eigenvalues == [1, 0.5, 0.25, 0.1, 0.05]
    assert cfg.model.mask_query is True


def test_parse_value():
    assert parse_value("1e-3") == 1e-3 and parse_value("adam") == "adam" and parse_value("[1, 2]") == [1, 2]


@pytest.mark.parametrize("key, hint", [("train.lrr", "train.lr"), ("tsk.d", "task"), ("model.n_layer", "model.n_layers")])
def test_unknown_key_names_closest_match(key, hint):
    with pytest.raises(UsageError, match=f"did you mean '{hint}'"):
        apply_overrides(quick(), {key: 1})


@pytest.mark.parametrize("key, value, field", [
    ("task.d", -1, "task.d"), ("task.n_points", 0, "task.n_points"), ("train.lr", 0, "train.lr"),
    ("train.optimizer", "rmsprop", "train.optimizer"), ("train.steps", 1.5, "train.steps"),
])
def test_out_of_range_values_name_field_and_bound(key, value, field):
    with pytest.raises(UsageError) as err:
        apply_overrides(quick(), {key: value})
    msg = str(err.value)
    assert msg.startswith("invalid config: " + field)
    assert "\n" not in msg


def test_eigenvalues_must_match_dimension():
    with pytest.raises(UsageError, match="task.eigenvalues has 2 entries but task.d is 5"):
        apply_overrides(quick(), {"task.eigenvalues": [1, 2]})


def test_hash_ignores_seeds_and_device_but_not_config():
    a = quick()
    assert apply_overrides(a, {"n_seeds": 4, "device": "cpu"}).config_hash() == a.config_hash()
    assert apply_overrides(a, {"train.lr": 0.01}).config_hash() != a.config_hash()
    assert apply_overrides(a, {"n_seeds": 4}).run_name().endswith("-s0-3")


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_yaml_round_trip(tmp_path, name):
    cfg = apply_overrides(EXPERIMENTS[name].config("quick"), {"seed": 3})
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    back = config_from_yaml(tmp_path / "config.yaml")
    assert back == cfg and back.config_hash() == cfg.config_hash()


def test_every_preset_validates():
    for name, exp in EXPERIMENTS.items():
        for preset in exp.presets:
            exp.config(preset)
    with pytest.raises(UsageError, match="allowed: quick, paper"):
        EXPERIMENTS["linreg-lsa"].config("huge")


# -- task/model unions, resolved defaults, old configs -------------------------------------------

def test_task_name_switch_validates_and_checks_subkeys_against_the_new_task(tmp_path):
    from icldyn.tasks.structured_features import StructuredFeaturesConfig

    # the sub-key may come before the switch: the switch is applied first
    cfg = apply_overrides(quick(), ["task.K=3", "task.name=structured-features", "task.n_points=30"])
    assert isinstance(cfg.task, StructuredFeaturesConfig)
    assert (cfg.task.K, cfg.task.n_points) == (3, 30)
    assert cfg.task.d == StructuredFeaturesConfig().d  # the rest: the new task's defaults
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert config_from_yaml(tmp_path / "config.yaml") == cfg
    assert cfg.config_hash() != quick().config_hash()
    # switching to the same name changes nothing
    assert apply_overrides(quick(), {"task.name": "linear-regression"}) == quick()
    gpt = apply_overrides(quick(), {"model.name": "gpt", "model.width": 16})
    assert gpt.model.name == "gpt" and gpt.model.width == 16


@pytest.mark.parametrize("overrides, hint, task", [
    ({"task.eigenvalue": [1]}, "task.eigenvalues", "linear-regression"),
    ({"task.name": "structured-features", "task.k": 3}, "task.K", "structured-features"),
    ({"task.name": "structured-features", "task.eigenvalues": [1]}, None, "structured-features"),
])
def test_unknown_subkey_of_a_union_names_the_closest_key_of_the_selected_member(overrides, hint, task):
    with pytest.raises(UsageError) as err:
        apply_overrides(quick(), overrides)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("unknown config key 'task.")
    assert f"valid keys of task '{task}'" in msg
    if hint:
        assert f"did you mean '{hint}'" in msg


def test_unknown_task_name_names_the_closest_task():
    with pytest.raises(UsageError, match="unknown task 'structured-feature' \\(did you mean 'structured-features'"):
        apply_overrides(quick(), {"task.name": "structured-feature"})


def test_validation_errors_name_the_field_without_the_union_tag():
    with pytest.raises(UsageError, match=r"^invalid config: model\.init_scale: "):
        apply_overrides(quick(), {"model.init_scale": -1})


@pytest.mark.parametrize("preset, overrides", [
    ("quick", {}), ("paper", {}), ("quick", {"task.covariance": "rotated", "task.d": 3}),
])
def test_dumped_eigenvalues_are_the_ones_the_task_samples_with(tmp_path, preset, overrides):
    import torch
    import yaml

    from icldyn.tasks import build_task

    cfg = EXPERIMENTS["linreg-lsa"].config(preset, overrides)
    dumped = yaml.safe_load(cfg.to_yaml())["task"]["eigenvalues"]
    assert dumped is not None and len(dumped) == cfg.task.d
    task = build_task(cfg.task)
    assert torch.equal(torch.tensor(dumped, dtype=torch.float64), task.eigenvalues)  # bit for bit
    spectrum = torch.linalg.eigvalsh(task.covariance).flip(0)
    assert torch.allclose(spectrum, torch.tensor(sorted(dumped, reverse=True), dtype=torch.float64))
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert config_from_yaml(tmp_path / "config.yaml").config_hash() == cfg.config_hash()


def test_resolved_eigenvalues_follow_d_and_covariance_but_given_ones_stay(tmp_path):
    cfg = quick()
    assert len(cfg.task.eigenvalues) == 5 and cfg.task.eigenvalues[-1] == pytest.approx(0.1)
    assert apply_overrides(cfg, {"task.d": 3}).task.eigenvalues == cfg.task.model_copy(update={"d": 3}).default_eigenvalues()
    assert apply_overrides(cfg, {"task.covariance": "isotropic"}).task.eigenvalues is None
    # a reloaded config.yaml holds λ explicitly; it still follows task.d as the rule's values
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert len(apply_overrides(config_from_yaml(tmp_path / "config.yaml"), {"task.d": 4}).task.eigenvalues) == 4
    given = apply_overrides(cfg, {"task.eigenvalues": [1, 1, 1, 1, 0.5]})
    assert apply_overrides(given, {"train.lr": 0.01}).task.eigenvalues == [1, 1, 1, 1, 0.5]
    with pytest.raises(UsageError, match="task.eigenvalues has 5 entries but task.d is 3"):
        apply_overrides(given, {"task.d": 3})


def test_old_config_with_retired_keys_loads_with_a_note_each():
    from icldyn.config import build, upgrade_config_dict

    cfg = quick()
    old = cfg.model_dump(mode="json")
    old["retired_flag"] = True
    old["task"]["old_knob"] = 3
    old["train"]["old_schedule_arg"] = 0.5
    with pytest.raises(UsageError, match="old_knob"):
        build(type(cfg), old)
    data, notes = upgrade_config_dict(old)
    assert "old_knob" in old["task"]  # the input is not changed
    assert build(type(cfg), data) == cfg
    assert len(notes) == 3
    for key in ("retired_flag", "task.old_knob", "train.old_schedule_arg"):
        assert sum(f" {key} " in n for n in notes) == 1, (key, notes)
    assert upgrade_config_dict(cfg.model_dump(mode="json")) == (cfg.model_dump(mode="json"), [])


def test_upgrade_checks_a_union_block_against_its_own_member():
    from icldyn.config import upgrade_config_dict

    cfg = apply_overrides(quick(), {"task.name": "structured-features"})
    old = cfg.model_dump(mode="json")
    old["task"]["eigenvalues"] = None  # a linear-regression key, not one of structured-features
    data, notes = upgrade_config_dict(old)
    assert "eigenvalues" not in data["task"] and len(notes) == 1 and "task.eigenvalues" in notes[0]


def test_unions_add_nothing_to_the_hashed_dump():
    cfg = quick()
    assert set(cfg.model_dump()) == {"experiment", "preset", "seed", "n_seeds", "eval_seed", "device", "task",
                                     "model", "train", "align_with", "sampled_check"}


def test_gpt_options_added_later_keep_old_run_names():
    """GPTConfig's activation/tokens/readout (added for grokking) enter the hash only away from their
    defaults: linreg-gpt's quick run of that time (3 layers, 16,000 steps; the preset until issue 19)
    keeps the name it had before they existed (1b4d337841)."""
    from icldyn.experiments import EXPERIMENTS

    quick = EXPERIMENTS["linreg-gpt"].config("quick", {
        "model.n_layers": 3, "train.lr": 2e-3, "train.steps": 16_000, "train.eval_prompts": 100_000,
        "train.checkpoint_every": 2000, "train.fused_optimizer": False, "train.n_records": 30,
        "train.eval_prompts_during": 2048})
    assert quick.config_hash() == "1b4d337841"
    assert apply_overrides(quick, {"model.activation": "relu"}).config_hash() != "1b4d337841"
