"""Scenarios: validated TOML descriptions of a guest and its VMM, and the lazy generators behind them.

:mod:`~kvmmu.sim.workloads.schema` validates files (embedded ones live in
``kvmmu/data/scenarios``), :mod:`~kvmmu.sim.workloads.guest` produces each vCPU's sampled access
stream and :mod:`~kvmmu.sim.workloads.vmm` the VMM's memslot operations. Prior art: fio's job files
(declarative workloads with units), made lazy so that a 1 TiB, 512-vCPU guest is a few numbers.
"""
