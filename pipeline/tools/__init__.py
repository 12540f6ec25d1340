"""The competitor's tools, beside the chain: the table of runs and their differences (`runs_table`), blend
kept runs into one submission, bench the machine (speed of training and prediction), tune a run's settings
by trials. They use the stages and the layers below them; nothing but the CLI imports them.
"""
