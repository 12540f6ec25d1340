"""digit-recognizer pipeline: download -> prepare -> split -> train -> predict -> report -> submit.

Each stage is one module: a pure core (functions on arrays, no printing) and, at its end, the
stage's definition (what it reads, its parameters, what it writes). `pipeline.stage` runs any
stage through the cache; `pipeline.cli` holds only the typer options.
"""

__version__ = "0.1.0"
