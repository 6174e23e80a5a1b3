"""Settings are refused before any work: RECSYS_* variables when the definitions load, run
configuration before any step of the run computes or writes, each with one line naming it."""

import subprocess

import dagster as dg
import pytest

from recsys_pipeline.definitions import build_definitions, definitions_from_environment
from recsys_pipeline.orchestration.config import RankingConfig, TrainingConfig, ranking_settings, run_config_problems, training_settings
from recsys_pipeline.settings import DEFAULT_SEED, EnvironmentSettings, RankingSettings, SettingsError, TrainingSettings

from .conftest import REPO_ROOT


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECSYS_SEED", "abc"),
        ("RECSYS_SEED", "-1"),
        ("RECSYS_SEED", "4294967296"),
        ("RECSYS_RMSE_TOLERANCE", "-1"),
        ("RECSYS_RMSE_TOLERANCE", "nan"),
        ("RECSYS_RMSE_TOLERANCE", "inf"),
        ("RECSYS_RMSE_TOLERANCE", "a lot"),
        ("RECSYS_MOVIELENS", ""),
        ("RECSYS_MOVIELENS", "   "),
        ("RECSYS_DATA_DIR", ""),
        ("RECSYS_EXECUTOR", "threads"),
        ("RECSYS_RETRAIN_TIMEZONE", "Mars/Olympus"),
        ("RECSYS_MOVIELENS_SHA256", "abc123"),
    ],
)
def test_a_bad_variable_is_refused_at_load_naming_it(variable, value):
    with pytest.raises(SettingsError) as refused:
        definitions_from_environment({variable: value})
    message = str(refused.value)
    assert variable in message and "\n" not in message


def test_unset_variables_mean_the_defaults():
    settings = EnvironmentSettings.from_environment({})
    assert settings == EnvironmentSettings()
    assert settings.seed == DEFAULT_SEED
    assert EnvironmentSettings.from_environment({"RECSYS_SEED": "7", "RECSYS_RMSE_TOLERANCE": "0"}).seed == 7


@pytest.mark.slow
def test_the_dagster_command_prints_one_line_for_a_bad_variable(tmp_path):
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "dagster") if (REPO_ROOT / ".venv" / "bin" / "dagster").exists() else "dagster",
         "asset", "materialize", "-m", "recsys_pipeline.definitions", "--select", "raw_movies"],
        capture_output=True, text=True, cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "RECSYS_SEED": "abc", "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "RECSYS_SEED" in line]
    assert errors == ["recsys_pipeline: RECSYS_SEED='abc': expected a whole number from 0 to 4294967295"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("step", "config", "named"),
    [
        ("trained_model", {"epochs": 0}, "epochs"),
        ("trained_model", {"batch_size": 0}, "batch_size"),
        ("trained_model", {"out_of_fold_folds": -2}, "out_of_fold_folds"),
        ("trained_model", {"out_of_fold_folds": 1}, "out_of_fold_folds"),
        ("trained_model", {"learning_rate": float("nan")}, "learning_rate"),
        ("trained_model", {"dropout": 1.0}, "dropout"),
        ("trained_model", {"tower_widths": [64, 0]}, "tower_widths"),
        ("rating_splits", {"method": "alphabetical"}, "method"),
        ("rating_splits", {"train_fraction": 0.5}, "train_fraction"),
        ("embedding_distance_matrix", {"max_movies": 0}, "max_movies"),
        ("ranking_model", {"epochs": 0}, "epochs"),
        ("ranking_model", {"negatives": "some"}, "negatives"),
    ],
)
def test_bad_run_configuration_is_named(step, config, named):
    problems = run_config_problems({"ops": {step: {"config": config}}})
    assert len(problems) == 1 and named in problems[0] and step in problems[0]


def test_a_run_with_bad_configuration_materializes_nothing(synthetic_movielens_dir, tmp_path):
    job = build_definitions(str(synthetic_movielens_dir), tmp_path).resolve_job_def("recsys_pipeline")
    result = job.execute_in_process(
        run_config={"ops": {"trained_model": {"config": {"epochs": 0}}}}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    assert result.get_asset_materialization_events() == []
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
    reported = " ".join(f"{event.message} {event.event_specific_data}" for event in result.all_events)
    assert "ops.trained_model.config.epochs=0" in reported


def test_run_configs_are_generated_from_the_settings():
    defaults = TrainingSettings()
    assert training_settings(TrainingConfig(), seed=defaults.seed) == defaults
    assert TrainingConfig.model_fields["epochs"].description
    assert ranking_settings(RankingConfig(), seed=defaults.seed) == RankingSettings(seed=defaults.seed)
    assert RankingConfig.model_fields["patience"].description


def test_every_asset_taking_run_configuration_is_checked_before_the_run(tmp_path):
    from recsys_pipeline.orchestration.config import RUN_CONFIGS

    graph = build_definitions(str(tmp_path), tmp_path).resolve_asset_graph()
    # Run configuration is per op: ranking_model's op also writes held_out_ranking_model.
    schemas = {graph.get(key).assets_def.op.name: graph.get(key).assets_def.op.config_schema.config_type for key in graph.get_all_asset_keys()}
    configured = {name for name, schema in schemas.items() if getattr(schema, "fields", None)}
    assert configured == set(RUN_CONFIGS)
