"""A trained run's report: its numbers (`metrics`), its figures drawn with matplotlib (`figures`), the HTML
page that shows them (`page`), and the writer that puts them on disk, whole or not at all (`writer`).
Imports only `pipeline.core`; the stage that writes a report is `pipeline.stages.report`.
"""
