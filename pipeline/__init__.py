"""digit-recognizer pipeline: download -> prepare -> split -> train -> predict -> report -> submit.

The folders are the layers, each importing only those below it: `core` (paths, records, the cache, the
stage runner), then `training`, `report` and `competition` (the Kaggle adapter), then `stages` (one
declaration per stage, and `chain`, their order), then `tools` (blend, bench, tune). `pipeline.cli` holds
only the typer options; docs/architecture.md draws the plan.
"""

__version__ = "0.1.0"
