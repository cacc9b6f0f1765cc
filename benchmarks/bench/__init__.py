"""blobstore-bench: the load generator, the machine's limits and the issue's targets.

Modules, lowest first: ``bodies`` (unique, verifiable bodies), ``client`` (aiohttp
slots), ``stats`` (results and CPU accounting), ``workloads`` (the operations and the
phase runner), ``nginx`` and ``limits`` (disk, sqlite, static-file GET ceiling),
``cluster`` (a local cluster of real nodes, login), ``report``, ``session`` (one run),
``suite`` (the targets), ``compare`` and ``cli`` (the console script).
"""
