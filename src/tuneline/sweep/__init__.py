"""Sweeps: candidate bases, methods and precisions as trials of one Optuna study, compared on the same
test records, ending in a cost-quality frontier and a recommendation (stages/sweep.py runs them).

  plan.py      the trials a sweep config asks for, as override sets of the config
  study.py     the Optuna study: storage, the queue of trials, heartbeats, pruning
  frontier.py  Pareto front and the non-inferiority recommendation (pure functions, tested on planted results)
  report.py    sweep/frontier.json's companion report.html
"""
