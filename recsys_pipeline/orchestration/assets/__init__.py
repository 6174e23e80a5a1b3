"""The asset graph, one module per group, one step of the story per asset: ingest, features, model,
similarity, evaluation, serving.

Each body calls the domain workflow (recsys_pipeline.workflow); TensorFlow is imported only inside
the steps that train or embed, so loading these definitions stays fast. Bump an asset's
`code_version` when a change alters what it computes: the UI then marks it and everything
downstream as stale.
"""

import dagster as dg

from recsys_pipeline.orchestration.assets import evaluation, features, ingest, model, serving, similarity

ASSETS = dg.load_assets_from_modules([ingest, features, model, similarity, evaluation, serving])
