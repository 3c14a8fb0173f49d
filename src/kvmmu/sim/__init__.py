"""The timed simulation: an event engine with integer-nanosecond time, a cost model, scenarios.

The package charges every step the model yields (``kvmmu.mmu.steps.Step``) a named cost and
interleaves vCPU and VMM threads by simulated time. It drives the model's own steppable code and
never re-implements a fault path or a memslot update.
"""
