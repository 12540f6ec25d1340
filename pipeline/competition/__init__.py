"""The Kaggle adapter: the kaggle client wrapped (credentials, network limits, errors in plain words),
the submission file's format, sending a submission, and the scores Kaggle gave with the log of what was
sent. Imports `pipeline.core`, and `pipeline.report` to put a new score on the run's report page; the kaggle
client itself loads inside functions.
"""
