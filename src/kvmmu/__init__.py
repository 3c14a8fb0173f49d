"""kvmmu: a model of KVM's MMIO-SPTE cache and its invalidation."""
