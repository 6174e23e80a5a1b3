"""Code versions tell the truth: an asset whose code changed carries a new code_version (or the change is
recorded as not altering what it computes)."""

import json

from recsys_pipeline_tests.code_fingerprints import TABLE, current_table

RECORD = "run `.venv/bin/python -m recsys_pipeline_tests.code_fingerprints --record`"


def test_every_asset_whose_code_changed_has_a_new_code_version():
    recorded = json.loads(TABLE.read_text())
    current = current_table()
    assert set(current) == set(recorded), f"assets added or removed since {TABLE.name} was recorded: {RECORD}"
    forgotten = [name for name, now in current.items() if now["fingerprint"] != recorded[name]["fingerprint"] and now["code_version"] == recorded[name]["code_version"]]
    assert not forgotten, (
        f"the code of {', '.join(forgotten)} changed but not its code_version: bump it where the asset is defined "
        f"(recsys_pipeline/orchestration/assets/), then {RECORD}. Only if what it computes is unchanged (a rename, a comment), record without bumping."
    )
    unrecorded = [name for name, now in current.items() if now != recorded[name]]
    assert not unrecorded, f"code_version bumped for {', '.join(unrecorded)}: {RECORD}"
