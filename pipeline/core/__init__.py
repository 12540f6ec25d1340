"""The ground floor, which every other layer stands on and which knows none of them: where files live
(`config`: paths, constants, presets), errors, the console and progress lines, files written atomically and
the lock, hashes and stage records (`cache`), the run cache, run records (`runs`) and the accuracy estimate,
and the stage runner (`stage`: run a declared stage unless it is up to date), which knows no stage by name.
"""
