"""`mhyolo benchmark`: one model in every deployment format, scored and timed in one run.

`formats` (how each file is made and run), `accuracy` (shared scoring), `timing`
(interleaved latency and throughput), `report` (rows, Markdown, JSON, plot), `run`
(the orchestration behind the command).
"""
