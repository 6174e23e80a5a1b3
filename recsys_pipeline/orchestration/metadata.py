"""Materialization metadata a person wants to see in the UI without opening a file."""


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
