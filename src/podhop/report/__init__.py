"""Reports: a results folder (``podhop.experiment.results``) as Markdown and self-contained HTML.

``table`` fills the seed's results table; ``plots`` draws the figures behind it with matplotlib;
``render`` assembles both formats from the same sections. Nothing here needs a cluster.
"""
