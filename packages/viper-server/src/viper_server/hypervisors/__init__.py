"""Runtimes that run a VM: `process` (host processes), `qemu` and `cloud-hypervisor` (microVMs)."""
