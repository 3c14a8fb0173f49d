"""Reports of timed runs: terminal tables, report.json, summary.csv, PNG plots, a trace, HTML.

Prior art: hyperfine's and pytest-benchmark's split between measuring and reporting. The layer
renders the plain values of :mod:`kvmmu.sim.results` and nothing else of the simulation.
:func:`kvmmu.report.output.write_report` writes a whole results directory atomically.
"""
