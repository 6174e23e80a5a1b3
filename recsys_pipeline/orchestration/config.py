"""Run configuration of the assets that take any, with each field's range, and the check that refuses a
bad run configuration before any step of the run does work.

`TrainingConfig` and `RankingConfig` are generated from the domain's `TrainingSettings` and
`RankingSettings` (same names, defaults, descriptions and bounds), so a training default lives in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pydantic

from recsys_pipeline import releases, similarity, splits
from recsys_pipeline.settings import RankingSettings, SettingsError, TrainingSettings

DEFAULT_TOP_N = 100
# Fields of the settings that are not run configuration: the seed comes from RECSYS_SEED.
NOT_CONFIGURABLE = ("seed",)


class SplitConfig(dg.Config):
    """Fractions of ratings assigned to train, validation and test; `method` "chronological" (the
    default: each user's latest ratings in test, the ones just before in validation, so the served
    ranking is chosen and measured on what people watch next, as serving uses it) or "random" (the
    seed's and the published peers' protocol for the rating model's RMSE)."""

    method: str = pydantic.Field(default=splits.CHRONOLOGICAL, pattern="^(" + "|".join(splits.METHODS) + ")$")
    train_fraction: float = pydantic.Field(default=splits.DEFAULT_FRACTIONS[0], gt=0, lt=1)
    validation_fraction: float = pydantic.Field(default=splits.DEFAULT_FRACTIONS[1], gt=0, lt=1)
    test_fraction: float = pydantic.Field(default=splits.DEFAULT_FRACTIONS[2], gt=0, lt=1)

    @pydantic.model_validator(mode="after")
    def fractions_sum_to_one(self) -> SplitConfig:
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train_fraction + validation_fraction + test_fraction = {total:g}: expected 1")
        return self

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train_fraction, self.validation_fraction, self.test_fraction)


def _config_field(setting: dataclasses.Field) -> tuple[Any, Any]:
    """The pydantic field of one settings field: same default, description and bounds."""
    description = setting.metadata["help"]
    bounds = {name: setting.metadata[name] for name in ("ge", "gt", "le", "lt") if name in setting.metadata}
    if isinstance(setting.default, tuple):  # bounds apply to each item of a list
        return list[int], pydantic.Field(default=list(setting.default), min_length=1, description=description)
    if isinstance(setting.default, float):
        bounds["allow_inf_nan"] = False
    if "choices" in setting.metadata:
        bounds["pattern"] = "^(" + "|".join(setting.metadata["choices"]) + ")$"
    return type(setting.default), pydantic.Field(default=setting.default, description=description, **bounds)


def settings_from_config(config: dg.Config, settings_class: type, seed: int):
    """The domain settings a run configuration describes, with the seed from RECSYS_SEED."""
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in config.model_dump().items()}
    return settings_class(**values, seed=seed)


def _config_from_settings(settings_class: type, name: str, doc: str) -> type[dg.Config]:
    """A run configuration class with a field per settings field (same names, defaults, descriptions
    and bounds) that also refuses what only the settings' own checks see (each tower width, fold counts)."""

    @pydantic.model_validator(mode="after")
    def valid_settings(config):
        try:
            settings_from_config(config, settings_class, seed=0)
        except SettingsError as error:
            raise ValueError(str(error)) from None
        return config

    return pydantic.create_model(
        name,
        __base__=dg.Config,
        __validators__={"valid_settings": valid_settings},
        __doc__=doc,
        **{setting.name: _config_field(setting) for setting in dataclasses.fields(settings_class) if setting.name not in NOT_CONFIGURABLE},
    )


TrainingConfig = _config_from_settings(
    TrainingSettings, "TrainingConfig", "Settings of the two-tower network and its training (recsys_pipeline.settings.TrainingSettings); the seed comes from RECSYS_SEED."
)
RankingConfig = _config_from_settings(
    RankingSettings, "RankingConfig", "Settings of the ranking model's training (recsys_pipeline.settings.RankingSettings); the seed comes from RECSYS_SEED."
)


def training_settings(config: dg.Config, seed: int) -> TrainingSettings:
    return settings_from_config(config, TrainingSettings, seed)


def ranking_settings(config: dg.Config, seed: int) -> RankingSettings:
    return settings_from_config(config, RankingSettings, seed)


class DistanceMatrixConfig(dg.Config):
    """The dense matrix grows with the square of the number of movies: 1.6 GB at 20,000 movies,
    15.6 GB at MovieLens 25M's 62,423. Above `max_movies` it is not written; `similar_movies`
    (blocked exact search, memory linear in movies) serves similar movies at any size."""

    max_movies: int = pydantic.Field(default=similarity.DEFAULT_MAX_MATRIX_MOVIES, ge=1)


class ReleaseConfig(dg.Config):
    """How many releases to keep; the oldest beyond this are deleted, never the current one."""

    keep_releases: int = pydantic.Field(default=releases.DEFAULT_KEEP, ge=1)


class RecommendationsConfig(dg.Config):
    """How many movies each user's list in user_recommendations holds."""

    top_n: int = pydantic.Field(default=DEFAULT_TOP_N, ge=1)


# The configuration class of every asset that takes run configuration, by step name.
RUN_CONFIGS: dict[str, type[dg.Config]] = {
    "rating_splits": SplitConfig,
    "trained_model": TrainingConfig,
    "ranking_model": RankingConfig,
    "embedding_distance_matrix": DistanceMatrixConfig,
    "release": ReleaseConfig,
    "user_recommendations": RecommendationsConfig,
}


def run_config_problems(run_config: Mapping[str, Any]) -> list[str]:
    """One line per bad field in the `ops` section of a run configuration, naming it."""
    problems = []
    for step, section in (run_config.get("ops") or {}).items():
        config_class = RUN_CONFIGS.get(step)
        if config_class is None or not isinstance(section, Mapping):
            continue
        try:
            config_class(**(section.get("config") or {}))
        except pydantic.ValidationError as error:
            for issue in error.errors():
                where = ".".join(str(part) for part in ("ops", step, "config", *issue["loc"]))
                shown = f"{where}={issue['input']!r}" if issue["loc"] else where
                problems.append(f"{shown}: {issue['msg'].removeprefix('Value error, ')}")
    return problems


def refuse_bad_run_config(run_config: Mapping[str, Any]) -> None:
    """Raise SettingsError listing every bad field of the run's configuration."""
    problems = run_config_problems(run_config)
    if problems:
        raise SettingsError("bad run configuration: " + "; ".join(problems))
