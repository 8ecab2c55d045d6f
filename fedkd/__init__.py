"""fedkd's core library: config, data and partitions, models, knowledge ops, fusion algorithms,
training loops, privacy, metrics and the results files, in numpy and torch.

It never imports flwr (flwr-datasets, a data library, is fine): clients/ and server/ wrap it in
Flower's apps. The package version is the installed distribution's (pyproject.toml), read with
importlib.metadata where it is recorded (fedkd/results.py).
"""
