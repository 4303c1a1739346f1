"""``python -m habc.results``: RESULTS.md from results/ (the work: habc.analysis.results)."""

import sys

from habc.analysis import results

if __name__ == '__main__':
  sys.exit(results.main())
