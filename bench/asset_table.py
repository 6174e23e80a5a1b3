"""Per-step wall time and peak memory of the latest (or a given) run in $DAGSTER_HOME, as a markdown table.

Wall time is STEP_START to STEP_SUCCESS/STEP_FAILURE in the run's event log. Peak memory is the
`peak_rss_mb` metadata every artifact IO manager attaches (the step process's ru_maxrss after the
artifact is written); check steps write no artifact, so they show only their time.

    DAGSTER_HOME=... python -m bench.asset_table [RUN_ID]
"""

import sys
from collections import defaultdict

import dagster as dg
from dagster import DagsterEventType


def step_figures(instance: dg.DagsterInstance, run_id: str) -> list[dict]:
    """One row per step: its wall time, peak memory, outcome, and the assets it materialized."""
    started, finished, outcome, peak, materialized = {}, {}, {}, defaultdict(lambda: None), defaultdict(list)
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_SKIPPED):
            finished[event.step_key] = record.timestamp
            outcome[event.step_key] = event.event_type.value.removeprefix("STEP_").lower()
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialized[event.step_key].append(event.asset_key.to_user_string())
            value = event.event_specific_data.materialization.metadata.get("peak_rss_mb")
            if value is not None:
                peak[event.step_key] = value.value
    return sorted(
        (
            {
                "step": key,
                "seconds": finished[key] - started[key] if key in finished else None,
                "peak_rss_mb": peak[key],
                "outcome": outcome.get(key, "unfinished"),
                "started": started[key],
                "assets": materialized[key],
            }
            for key in started
        ),
        key=lambda row: row["started"],
    )


def markdown(rows: list[dict]) -> str:
    lines = ["| step | wall s | peak RSS MB | outcome |", "|---|---:|---:|---|"]
    for row in rows:
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f}"
        peak = "" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"
        lines.append(f"| {row['step']} | {seconds} | {peak} | {row['outcome']} |")
    return "\n".join(lines)


def main() -> None:
    with dg.DagsterInstance.get() as instance:
        run_id = sys.argv[1] if len(sys.argv) > 1 else instance.get_runs(limit=1)[0].run_id
        rows = step_figures(instance, run_id)
        run = instance.get_run_by_id(run_id)
        stats = instance.get_run_stats(run_id)
        print(f"run {run_id}: {run.status.value}, {stats.end_time - stats.start_time:.1f} s from start to end")
        print(markdown(rows))


if __name__ == "__main__":
    main()
