"""Reading results folders, one concept per module: ``tables`` (the Parquet files), ``folder``
(spec, state and tables of a folder, read leniently), ``outcome`` (a trial's status), ``ranking``,
``summary``, ``status``, ``export`` and the ``report`` package.

Imports no torch, timm or ray, and nothing above config/utils/errors: ``ofasearch status`` and
``report`` start fast and open folders written by other versions.
"""
