"""Materialization metadata a person wants to see in the UI without opening a file."""

import base64
import io
import numbers
from typing import Any

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 5


def table_metadata(table: pd.DataFrame, preview_columns: list[str] | None = None) -> dict[str, Any]:
    """Row count, column schema and a markdown preview of the first rows."""
    preview = table[preview_columns] if preview_columns else table
    return {
        "dagster/row_count": len(table),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=str(name), type=str(dtype)) for name, dtype in table.dtypes.items()]
        ),
        "preview": dg.MetadataValue.md(preview.head(PREVIEW_ROWS).to_markdown(index=False)),
    }


def line_chart(series: dict[str, list[float]], title: str, x_label: str, y_label: str) -> dg.MetadataValue:
    """A PNG line chart embedded in markdown, so the UI shows it without opening any file."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a PNG buffer
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, values in series.items():
        axes.plot(range(1, len(values) + 1), values, marker="o", label=name)
    axes.set(title=title, xlabel=x_label, ylabel=y_label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.legend()
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})")


SHOWN_DECIMALS = 4


def rounded(figures: dict[str, float | int]) -> dict[str, float | int]:
    """Figures as the UI should show them: floats to four decimals (the artifacts keep them exact)."""
    return {name: value if isinstance(value, numbers.Integral) else round(float(value), SHOWN_DECIMALS) for name, value in figures.items()}
