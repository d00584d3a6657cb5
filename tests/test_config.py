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
