"""Config: recipes validate, overrides apply, bad values are named."""

from __future__ import annotations

import pytest

from vislab.config import Config, apply_overrides, list_recipes, load_config, parse_override, recipe_info
from vislab.errors import ConfigError

REFERENCE = {
    "resnet18-ln-plateau": "84.79",
    "resnet18-bn": "87.12",
    "resnet9-onecycle": "90.63",
    "resnet18-sgd-plateau": "92.53",
}


def test_shipped_recipes_are_listed_and_valid():
    names = list_recipes()
    assert {"quick", *REFERENCE} <= set(names)
    for name in names:
        run_name, cfg = load_config(name)
        assert run_name == name and isinstance(cfg, Config)


@pytest.mark.parametrize("name,acc", REFERENCE.items())
def test_recipe_header_states_reference_accuracy(name, acc):
    info = recipe_info(name)
    assert info["title"] and acc in info["description"]


def test_recipes_encode_the_course_settings():
    _, ln = load_config("resnet18-ln-plateau")
    assert (ln.model.norm, ln.optim.name, ln.optim.lr, ln.optim.weight_decay) == ("layer", "adam", 0.01, 1e-5)
    assert (ln.sched.name, ln.sched.monitor, ln.sched.factor, ln.sched.patience, ln.sched.threshold_mode) == (
        "plateau",
        "test_loss",
        0.1,
        2,
        "abs",
    )
    assert (ln.augment.rotate_deg, ln.augment.cutout_size, ln.trainer.batch_size, ln.trainer.epochs) == (5, 16, 128, 40)
    _, r9 = load_config("resnet9-onecycle")
    assert (r9.sched.name, r9.sched.peak_epoch, r9.trainer.epochs, r9.trainer.batch_size, r9.augment.cutout_size) == (
        "onecycle",
        5,
        24,
        512,
        8,
    )
    _, sgd = load_config("resnet18-sgd-plateau")
    assert r9.sched.max_lr == 0.0027 and sgd.optim.lr == "auto"
    assert (sgd.model.last_stride, sgd.sched.monitor, sgd.sched.mode, sgd.sched.patience, sgd.sched.threshold) == (
        1,
        "test_acc",
        "max",
        3,
        0.1,
    )


@pytest.mark.parametrize(
    "item,expected",
    [
        ("optim.lr=0.1", (["optim", "lr"], 0.1)),
        ("trainer.deterministic=true", (["trainer", "deterministic"], True)),
        ("data.root=../x y", (["data", "root"], "../x y")),
        ("data.train_size=null", (["data", "train_size"], None)),
    ],
)
def test_parse_override_types_values(item, expected):
    assert parse_override(item) == expected


def test_required_overrides_apply():
    overrides = [
        "data.name=imagefolder",
        "data.root=/d",
        "data.train_size=1000",
        "data.test_size=200",
        "model.name=resnet18",
        "model.norm=group",
        "model.width=0.5",
        "optim.name=adamw",
        "optim.lr=0.003",
        "sched.name=cosine",
        "trainer.epochs=3",
        "trainer.batch_size=64",
        "trainer.device=cpu",
        "trainer.seed=7",
        "trainer.deterministic=true",
    ]
    _, cfg = load_config("quick", overrides)
    assert (cfg.data.name, cfg.data.root, cfg.data.train_size, cfg.data.test_size) == ("imagefolder", "/d", 1000, 200)
    assert (cfg.model.name, cfg.model.norm, cfg.model.width) == ("resnet18", "group", 0.5)
    assert (cfg.optim.name, cfg.optim.lr, cfg.sched.name) == ("adamw", 0.003, "cosine")
    assert (
        cfg.trainer.epochs,
        cfg.trainer.batch_size,
        cfg.trainer.device,
        cfg.trainer.seed,
        cfg.trainer.deterministic,
    ) == (3, 64, "cpu", 7, True)


@pytest.mark.parametrize(
    "override,needles",
    [
        ("trainer.epoch=3", ["trainer.epoch", "unknown key", "epochs"]),
        ("trainer.epochs=-1", ["trainer.epochs", "-1", "greater than 0"]),
        ("trainer.epochs=ten", ["trainer.epochs", "ten"]),
        ("optim.name=rmsprop", ["optim.name", "rmsprop", "sgd"]),
        ("sched.name=poly", ["sched.name", "poly", "onecycle"]),
        ("model.name=vgg16", ["model.name", "vgg16", "resnet18"]),
        ("model.norm=instance", ["model.norm", "instance"]),
        ("augment.flip_p=1.5", ["augment.flip_p", "1.5"]),
        ("trainer.device=tpu", ["trainer.device", "tpu"]),
        ("optimizer.lr=0.1", ["optimizer", "sections"]),
        ("lr=0.1", ["lr", "section.key"]),
        ("optim.lr", ["optim.lr", "section.key=value"]),
    ],
)
def test_bad_values_are_named(override, needles):
    with pytest.raises(ConfigError) as e:
        load_config("quick", [override])
    msg = str(e.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert "\n" not in msg


def test_plateau_mode_must_match_monitor():
    with pytest.raises(ConfigError, match="sched.mode=max"):
        load_config("resnet18-sgd-plateau", ["sched.mode=min"])


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="Unknown recipe 'nope'.*quick"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("trainer:\n  epochs: 2\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match="trainer.batchsize: unknown key"):
        load_config(bad)


def test_yaml_file_recipe(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("model:\n  name: resnet18\ntrainer:\n  epochs: 3\n")
    name, cfg = load_config(f)
    assert name == "mine" and cfg.model.name == "resnet18" and cfg.trainer.epochs == 3


def test_apply_overrides_does_not_mutate_input():
    raw = {"trainer": {"epochs": 4}}
    out = apply_overrides(raw, {"trainer.epochs": 9})
    assert raw == {"trainer": {"epochs": 4}} and out["trainer"]["epochs"] == 9


def test_config_reference_lists_every_field():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    for section, sec_field in Config.model_fields.items():
        assert f"## `{section}`" in doc
        for key in sec_field.annotation.model_fields:
            assert f"| `{key}` |" in doc, f"docs/config.md lacks {section}.{key}; run tools/gen_config_docs.py"


def test_config_reference_is_generated_from_the_schema():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen_config_docs", root / "tools" / "gen_config_docs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    schema = (root / "src" / "vislab" / "config" / "_schema.py").read_text()
    doc = (root / "docs" / "config.md").read_text()
    assert tool.render(schema) == doc, "docs/config.md differs from the schema; run python tools/gen_config_docs.py"
