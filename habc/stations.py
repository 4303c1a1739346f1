"""``python -m habc.stations {actor,learner} ...``: one station's actor or the learner of a fleet
(the work: habc.fleet.stations)."""

import sys

from habc.fleet import stations

if __name__ == '__main__':
  sys.exit(stations.main())
