"""report stage: reports/summary.json (headline metrics, DVC metrics) and reports/index.html (a self-contained
page that opens offline) from the outputs of every other stage, and the headline metrics on the MLflow parent
run. What the page holds and how it is built: pipeline/reporting.py (shared with vtt_score).
"""
from __future__ import annotations

from pipeline import reporting
from pipeline.params import parse_stage_args


def main(argv=None) -> dict:
    return reporting.run(parse_stage_args(__doc__, argv))


if __name__ == "__main__":
    main()
