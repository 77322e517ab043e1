"""Turn a recipe name or YAML file plus `--set a.b=value` overrides into one validated Config."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from ._schema import Config

DEFAULT_RECIPE = "quick"


def _recipe_files() -> dict[str, Any]:
    root = resources.files("vislab") / "recipes"
    return {p.name[: -len(".yaml")]: p for p in root.iterdir() if p.name.endswith(".yaml")}


def list_recipes() -> list[str]:
    return sorted(_recipe_files())


def recipe_info(name: str) -> dict[str, Any]:
    """The recipe's comment header (first line as title, the rest as description), the course's
    reference figure ("course", percent, or None for vislab's own recipes) and vislab's measured
    result ("measured", an entry of results.json, or None until a run is recorded)."""
    from ..results import course_reference, measured_result  # package data, read on demand

    text = _recipe_files()[name].read_text()
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
    header: list[str] = []
    for ln in text.splitlines():
        if not ln.startswith("#"):
            break
        header.append(ln[1:].strip())
    ref = course_reference(name)
    return {
        "name": name,
        "title": header[0] if header else "",
        "description": " ".join(header[1:] or lines[1:]),
        "course": ref.final if ref else None,
        "measured": measured_result(name),
    }


def parse_config_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} must hold a mapping of sections (data, augment, model, ...), got {type(data).__name__}."
        )
    return data


def read_recipe(recipe: str | Path | None) -> tuple[str, dict[str, Any]]:
    """Resolve a recipe name or YAML path to (run name, raw mapping)."""
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    files = _recipe_files()
    if isinstance(recipe, str) and recipe in files:
        return recipe, parse_config_yaml(files[recipe].read_text(), f"recipe {recipe!r}")
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(
                f"Config file {str(path)!r} does not exist. Give a recipe name ({', '.join(sorted(files))}) or the path of a YAML file."
            )
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"Config file {str(path)!r} cannot be read: {e.strerror}.") from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"Config file {str(path)!r} is not a UTF-8 text file; give a YAML config or a recipe name."
            ) from None
        data = parse_config_yaml(text, f"config file {str(path)!r}")
        if "recipe" in data:
            data = _extend_recipe(data, path, files)
        return path.stem, data
    raise ConfigError(
        f"Unknown recipe {str(recipe)!r}. Known recipes: {', '.join(sorted(files))}; or give the path of a YAML file."
    )


def _extend_recipe(data: dict[str, Any], path: Path, files: dict[str, Any]) -> dict[str, Any]:
    """A YAML file that starts with `recipe: NAME` holds only what it changes in that shipped recipe."""
    data = dict(data)
    base = data.pop("recipe")
    if not isinstance(base, str) or base not in files:
        raise ConfigError(
            f"Config file {str(path)!r}: recipe = {base!r} is not a shipped recipe; `recipe:` names the recipe the file "
            f"changes, one of {', '.join(sorted(files))} (`vislab recipes NAME` prints one to start from)."
        )
    changes: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(
                f"Config file {str(path)!r}: section {section!r} must be a mapping of keys, got {values!r}."
            )
        changes.update({f"{section}.{key}": value for key, value in values.items()})
    # As `--set` overrides of the recipe: the same section checks and the same rule for two forms of one setting.
    return apply_overrides(parse_config_yaml(files[base].read_text(), f"recipe {base!r}"), changes)


# (section, key) -> the key in the same section that states the same setting another way.
ALTERNATIVE_KEYS = {("sched", "peak_epoch"): "peak_fraction", ("sched", "peak_fraction"): "peak_epoch"}


def parse_override(item: str) -> tuple[list[str], Any]:
    """'optim.lr=0.1' -> (['optim', 'lr'], 0.1); values are parsed as YAML scalars/lists."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"Override {item!r} is not of the form section.key=value (e.g. --set optim.lr=0.1).")
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"Override key {key!r} must be section.key, e.g. trainer.epochs; sections: {', '.join(Config.model_fields)}."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    data = copy.deepcopy(dict(raw))
    if not overrides:
        return data
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    set_by_override: set[tuple[str, str]] = set()
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else list(key)
        if len(parts) != 2:
            raise ConfigError(f"Override key {'.'.join(parts)!r} must be section.key, e.g. trainer.epochs.")
        section, field = parts
        if section not in Config.model_fields:
            raise ConfigError(
                f"Unknown config section {section!r} in override {'.'.join(parts)!r}; sections are: {', '.join(Config.model_fields)}."
            )
        sec = data.setdefault(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"Config section {section!r} must be a mapping, got {sec!r}.")
        sec[field] = value
        set_by_override.add((section, field))
    for (section, field), other in ALTERNATIVE_KEYS.items():
        # Two forms of one setting: an override of one replaces the recipe's other form, so
        # `--set sched.peak_epoch=3` works on a recipe that states sched.peak_fraction.
        if (
            (section, field) in set_by_override
            and data[section][field] is not None
            and (section, other) not in set_by_override
        ):
            data[section].pop(other, None)
    return data


def _format_validation(err: ValidationError, where: str) -> str:
    parts = []
    for e in err.errors():
        # Sections are one level deep; a failed Union/Literal adds member names after the field.
        loc = ".".join(str(p) for p in e["loc"][:2])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            section = e["loc"][0] if len(e["loc"]) > 1 else None
            fields = (
                Config.model_fields[section].annotation.model_fields
                if section in Config.model_fields
                else Config.model_fields
            )
            parts.append(f"{loc}: unknown key; allowed keys are {', '.join(fields)}")
            continue
        if e["type"] == "value_error":
            parts.append(msg.removeprefix("Value error, "))
            continue
        parts.append(f"{loc} = {e.get('input')!r}: {msg}")
    # One line per distinct problem, joined into one paragraph.
    seen = list(dict.fromkeys(parts))
    return f"Invalid config ({where}): " + "; ".join(seen) + "."


def validate_config(data: Mapping[str, Any], where: str = "config") -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, where)) from None
    from ..models import list_models  # late import: the registry fills on import of the models

    if cfg.model.name not in list_models():
        raise ConfigError(
            f"Invalid config ({where}): model.name = {cfg.model.name!r} is not a registered model; choose one of {', '.join(list_models())}."
        )
    return cfg


def load_config(
    recipe: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] | None = None
) -> tuple[str, Config]:
    """Recipe name or YAML path + overrides -> (run name, validated Config)."""
    name, raw = read_recipe(recipe)
    data = apply_overrides(raw, overrides)
    where = f"recipe {name!r}" if not str(recipe or "").endswith((".yaml", ".yml")) else f"file {str(recipe)!r}"
    if overrides:
        where += " with overrides"
    return name, validate_config(data, where)


def config_to_yaml(cfg: Config, header: str = "") -> str:
    body = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    return (header + body) if header else body
