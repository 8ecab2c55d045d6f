"""Figures fit for a paper, one function per figure (matplotlib, headless).

``run``: one run's figures (``fedkd plot``); ``sweep``: a sweep's (``fedkd report``);
``partition``, ``weights``, ``privacy``: the figures both share. Each figure function writes a
PNG (and a PDF beside it, for papers) and returns the PNG's path.
"""
