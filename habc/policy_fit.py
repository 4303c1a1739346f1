"""``python -m habc.policy_fit --workdir=W``: R^2 of a run's policy on its demonstration windows
(the work: habc.analysis.policy_fit)."""

from habc.analysis import policy_fit

if __name__ == '__main__':
  policy_fit.main()
