"""Registers the specs of every non-x86_64 ISA relink knows (imported by the registry).

Arch layer. `relink.arch._load_builtin` imports this module after `x86_64`, so
``spec_for(e_machine, elf_class)`` finds x86 (i386), aarch64, arm, riscv64, riscv32 and
loongarch64 on any host. Each module only builds data; importing them touches nothing
of the host CPU.
"""

from __future__ import annotations

from relink.arch import aarch64, arm, loongarch64, riscv, x86

__all__ = ["aarch64", "arm", "loongarch64", "riscv", "x86"]
