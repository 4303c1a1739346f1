"""Benchmarks that print tables: ``python -m habc.bench {learner,data,envs,policy}``."""
