"""Science stages of ramanscreen: plain, typed functions, free of Prefect and Dask.

One module per stage: ``structures``, ``md``, ``reference``, ``polarizability``,
``spectra``, ``transport``, ``results``; ``common`` holds errors, units and atomic IO.
"""
