"""The real ``/dev/kvm``, held against the model.

Design. Everything here drives the real kernel from pure Python (ctypes + ``fcntl.ioctl``) so that
the model's claims can be checked on the machine the project runs on: :mod:`.bindings` (ioctls,
structures, Kvm/Vm/Vcpu), :mod:`.stats` (binary stats fds), :mod:`.tracefs` (kvm/kvmmmu events),
:mod:`.asm` and :mod:`.guest` (a 64-bit CPL3 guest written as readable source), :mod:`.harness`
(a VM running that guest on vCPU threads), :mod:`.scenario` (the TOML scenario format and its
random generator), :mod:`.diff` (the same scenario on model and kernel, compared),
:mod:`.errno_check` (memslot requests' errno on both sides), :mod:`.calibrate` (costs measured
for the simulation).  The package imports the model (``kvmmu.vm``) and never the CLI or ``sim``.

Prior art: the kernel's ``tools/testing/selftests/kvm`` library and kvm-hello-world.
"""
