"""digit-recognizer pipeline: download -> prepare -> split -> train -> predict -> submit.

Each stage is one module with a pure core (functions on arrays, no paths, no printing);
`pipeline.cli` is the thin typer shell that finds files, checks the cache and prints.
"""

__version__ = "0.1.0"
