"""``mlrun sweep``: hyperparameter searches on Optuna, one ordinary run folder per trial.

- :mod:`mlrun.sweep.space`: the ``[sweep]`` section and the ``key=v1,v2`` grid shorthand
- :mod:`mlrun.sweep.check`: every value and the objective checked before any trial starts
- :mod:`mlrun.sweep.study`: ``sweep.json``, the storage and the Optuna study
- :mod:`mlrun.sweep.trials`: one trial's recipe, run folder and result
- :mod:`mlrun.sweep.runner`: N trial processes at once; resume after a stop
- :mod:`mlrun.sweep.callback`: the ``sweep_trial`` callback reporting epochs (and pruning)
- :mod:`mlrun.sweep.table`: the table of trials and ``sweep.png``

Optuna is imported only when a sweep runs (``pip install 'torch-mlrun[sweep]'``).
"""
