"""Every setting of the pipeline, its default and its valid range, in one place (no Dagster, no TensorFlow).

Three kinds: `TrainingSettings`, how the rating network is built and trained, and `RankingSettings`,
how the ranking model is trained (the Dagster run configs of `trained_model` and `ranking_model` are
generated from them), and `EnvironmentSettings`, the RECSYS_* variables read when the code location
loads. All refuse an out-of-range value with one line naming the setting, before any work is done.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_SEED = 47005
DEFAULT_DATA_DIR = "data"
DEFAULT_SOURCE = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
DEFAULT_RMSE_TOLERANCE = 0.01
DEFAULT_RETRAIN_CRON = "0 3 * * 1"  # Mondays 03:00
DEFAULT_RETRAIN_TIMEZONE = "UTC"
DEFAULT_EXECUTOR = "in_process"
# numpy's and scikit-learn's seeds are unsigned 32-bit numbers.
MAX_SEED = 2**32 - 1


class SettingsError(ValueError):
    """A setting outside its valid range; the message is one line naming the setting."""


def _setting(default: Any, help: str, **bounds: Any) -> Any:
    """A dataclass field carrying its description and bounds (ge, gt, le, lt, or choices), read by
    validation and the Dagster config."""
    if isinstance(default, list | tuple):
        return field(default=tuple(default), metadata={"help": help, **bounds})
    return field(default=default, metadata={"help": help, **bounds})


BOUND_CHECKS = {
    "ge": (lambda value, bound: value >= bound, "at least"),
    "gt": (lambda value, bound: value > bound, "greater than"),
    "le": (lambda value, bound: value <= bound, "at most"),
    "lt": (lambda value, bound: value < bound, "less than"),
}


def out_of_bounds(value: Any, bounds: Mapping[str, float]) -> str | None:
    """What `value` (a number or each number of a tuple) violates among `bounds`, or None."""
    values = value if isinstance(value, tuple | list) else (value,)
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            return "a finite number"
        for name, (check, words) in BOUND_CHECKS.items():
            if name not in bounds or isinstance(item, str):
                continue
            bound = bounds[name]
            if not check(item, bound):
                return f"{words} {bound:g}"
    return None


def refuse_out_of_bounds(settings: Any, kind: str) -> None:
    """Raise SettingsError naming the first field of a settings dataclass outside its bounds or choices."""
    for setting in fields(settings):
        value = getattr(settings, setting.name)
        problem = out_of_bounds(value, setting.metadata)
        choices = setting.metadata.get("choices")
        if problem is None and choices is not None and value not in choices:
            problem = "one of " + ", ".join(choices)
        if problem:
            raise SettingsError(f"{kind} setting {setting.name}={value!r}: expected {problem}")


@dataclass(frozen=True)
class TrainingSettings:
    """How the two-tower network is built and trained. Every field except `seed` (which comes from
    RECSYS_SEED) is also a field of `trained_model`'s run config, under the same name."""

    epochs: int = _setting(30, "passes over the training ratings at most (early stopping may end sooner)", ge=1)
    batch_size: int = _setting(1024, "ratings per gradient step", ge=1)
    learning_rate: float = _setting(5e-3, "Adam's initial learning rate", gt=0)
    early_stopping_patience: int = _setting(4, "epochs without a better validation loss before training stops", ge=1)
    early_stopping_min_delta: float = _setting(
        1e-3, "the least drop of validation MSE (stars squared) that counts as better for early stopping; 0: any drop", ge=0
    )
    lr_reduction_factor: float = _setting(0.3, "factor applied to the learning rate when validation loss stalls", gt=0, lt=1)
    lr_reduction_patience: int = _setting(1, "epochs without progress before the learning rate is reduced", ge=1)
    min_learning_rate: float = _setting(1e-5, "the learning rate is never reduced below this", gt=0)
    tower_widths: tuple[int, ...] = _setting((128, 64), "widths of each tower's hidden Dense layers", ge=1)
    embedding_size: int = _setting(32, "length of the user and movie vectors", ge=1)
    dropout: float = _setting(0.2, "dropout rate after each hidden layer", ge=0, lt=1)
    id_embedding_l2: float = _setting(1e-3, "L2 penalty on the user and movie ID embeddings (hybrid)", ge=0)
    id_bias_l2: float = _setting(1e-5, "L2 penalty on the user and movie ID biases (hybrid)", ge=0)
    hybrid: bool = _setting(True, "add learned user and movie ID embeddings and biases to the content towers; false: content only")
    out_of_fold_folds: int = _setting(5, "folds for the out-of-fold rating statistics of training ratings; 0: in sample, as the notebook", ge=0)
    # The notebook's design (unit-length vectors, a cosine, and no biases); see bench/quality.py.
    unit_vectors: bool = _setting(False, "normalise both towers' vectors to unit length (the notebook's cosine)")
    biases: bool = _setting(True, "learn a bias per side beside the dot product")
    seed: int = field(default=DEFAULT_SEED, metadata={"ge": 0, "le": MAX_SEED})

    def __post_init__(self) -> None:
        refuse_out_of_bounds(self, "training")
        if self.out_of_fold_folds == 1:
            raise SettingsError("training setting out_of_fold_folds=1: expected 0 (in sample) or at least 2 folds")


@dataclass(frozen=True)
class RankingSettings:
    """How the time-aware ranking model (recsys_pipeline.sequential) is built and trained on each
    user's ratings in order. Every field except `seed` is also a field of `ranking_model`'s run config."""

    dimensions: int = _setting(128, "length of the user and movie vectors", ge=1)
    max_history: int = _setting(50, "how many of a user's latest rated movies the user tower reads", ge=1)
    encoder: str = _setting("pool", "how the user tower reads the history: learned recency pooling or one causal attention block", choices=("pool", "attention"))
    gaps: bool = _setting(True, "add an embedding of the time from each history rating to the user's latest one")
    user_content: bool = _setting(True, "add a projection of the user's per-genre averages (the seed's user features)")
    targets: int = _setting(10, "how many of the following movies each history prefix learns to predict", ge=1)
    mask_history: bool = _setting(True, "leave a prefix's own movies out of its softmax (they are never recommended)")
    negatives: str = _setting(
        "in_batch",
        "softmax over the batch's target movies with the log-Q correction (in_batch) or over every movie (all: about 60% slower, no better on ml-latest-small)",
        choices=("all", "in_batch"),
    )
    epochs: int = _setting(20, "passes over the users at most (early stopping on validation NDCG@10 may end sooner)", ge=1)
    batch_size: int = _setting(256, "history prefixes per gradient step", ge=1)
    learning_rate: float = _setting(1e-2, "Adam's learning rate", gt=0)
    patience: int = _setting(2, "epochs without a better validation NDCG@10 before training stops", ge=1)
    prefixes_per_user: int = _setting(32, "history prefixes drawn per user and epoch, fresh each epoch; 0: every prefix", ge=0)
    recent: float = _setting(0.0, "above 0, prefixes are drawn more often toward the end of a user's ratings", ge=0)
    validation_users: int = _setting(
        20_000,
        "users whose validation NDCG@10 stops training and chooses the item-item term: a fixed random sample when more have validation ratings (0: all)",
        ge=0,
    )
    refit_epochs: int = _setting(2, "epochs on training and validation ratings after early stopping, so movies first rated in validation are learned", ge=0)
    serving_epochs: int = _setting(
        1,
        "epochs on every rating, test included, after the held-out model (what model_evaluation measures) is exported: the served model learns the latest ratings too; 0: serve the held-out model",
        ge=0,
    )
    seed: int = field(default=DEFAULT_SEED, metadata={"ge": 0, "le": MAX_SEED})

    def __post_init__(self) -> None:
        refuse_out_of_bounds(self, "ranking")


@dataclass(frozen=True)
class EnvironmentSettings:
    """The RECSYS_* variables, parsed and checked (see `from_environment`)."""

    source: str = DEFAULT_SOURCE
    source_sha256: str | None = None
    data_dir: str = DEFAULT_DATA_DIR
    seed: int = DEFAULT_SEED
    retrain_cron: str = DEFAULT_RETRAIN_CRON
    retrain_timezone: str = DEFAULT_RETRAIN_TIMEZONE
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE
    executor: str = DEFAULT_EXECUTOR  # checked against the executors the code location offers

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> EnvironmentSettings:
        """Each variable that is set, checked; a bad one raises SettingsError naming it. Unset means the default."""
        return cls(
            source=_text(environ, "RECSYS_MOVIELENS", DEFAULT_SOURCE),
            source_sha256=_sha256(environ, "RECSYS_MOVIELENS_SHA256"),
            data_dir=_text(environ, "RECSYS_DATA_DIR", DEFAULT_DATA_DIR),
            seed=_whole_number(environ, "RECSYS_SEED", DEFAULT_SEED, 0, MAX_SEED),
            retrain_cron=_text(environ, "RECSYS_RETRAIN_CRON", DEFAULT_RETRAIN_CRON),
            retrain_timezone=_timezone(environ, "RECSYS_RETRAIN_TIMEZONE", DEFAULT_RETRAIN_TIMEZONE),
            rmse_tolerance=_non_negative_number(environ, "RECSYS_RMSE_TOLERANCE", DEFAULT_RMSE_TOLERANCE),
            executor=_text(environ, "RECSYS_EXECUTOR", DEFAULT_EXECUTOR),
        )


def data_dir_from_environment(environ: Mapping[str, str]) -> str:
    """RECSYS_DATA_DIR, checked, or the default: the one rule the code location and the `recsys` command share."""
    return _text(environ, "RECSYS_DATA_DIR", DEFAULT_DATA_DIR)


def _text(environ: Mapping[str, str], name: str, default: str) -> str:
    if name not in environ:
        return default
    value = environ[name].strip()
    if not value:
        raise SettingsError(f"{name} is set but empty: unset it for the default ({default}) or give a value")
    return value


def _whole_number(environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    text = _text(environ, name, str(default))
    if not re.fullmatch(r"[+-]?\d+", text) or not minimum <= int(text) <= maximum:
        raise SettingsError(f"{name}={environ[name]!r}: expected a whole number from {minimum} to {maximum}")
    return int(text)


def _non_negative_number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = _text(environ, name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name}={environ[name]!r}: expected a finite number of stars, 0 or more")
    return value


def _sha256(environ: Mapping[str, str], name: str) -> str | None:
    if not environ.get(name, ""):
        return None
    value = environ[name].strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise SettingsError(f"{name}={environ[name]!r}: expected 64 hexadecimal digits (a SHA-256)")
    return value


def _timezone(environ: Mapping[str, str], name: str, default: str) -> str:
    value = _text(environ, name, default)
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{name}={value!r}: expected an IANA time zone such as UTC or Europe/Paris") from None
    return value
