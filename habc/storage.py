"""``python -m habc.storage --check <url> | --bench <url>``: is a shared-storage URL reachable and
writable, and how fast (the work: habc.fleet.storage)."""

import sys

from habc.fleet import storage

if __name__ == '__main__':
  sys.exit(storage._main(sys.argv[1:]))  # pylint: disable=protected-access
