"""DVC stages: one module per stage, each with a ``main()``. The only code that knows params and paths.

Importing the package pins the CPU float kernels to AVX2 (ATen, oneDNN, MKL) on x86 CPUs that have it, before
torch loads: left alone, each library picks the widest instructions the CPU has, and the trained outs of an
AVX-512 machine differ in their last bits from an AVX2 machine's, so a dvc.lock made on one does not match a
rerun on the other. Measured: the extractor stage's out equals the other machine's byte for byte with the pin,
and differs without it. A variable already set wins; MEDAUG_CPU_ISA=native leaves all four to the libraries.
"""
import os


def _pin_cpu_isa() -> None:
    if os.environ.get("MEDAUG_CPU_ISA", "avx2") == "native":
        return
    try:  # Linux: ATen takes ATEN_CPU_CAPABILITY=avx2 on trust, so only where the CPU has AVX2
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return
    if "avx2" in flags and "fma" in flags:
        for name, value in (("ATEN_CPU_CAPABILITY", "avx2"), ("DNNL_MAX_CPU_ISA", "AVX2"),
                            ("MKL_CBWR", "AVX2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2")):
            os.environ.setdefault(name, value)


_pin_cpu_isa()
