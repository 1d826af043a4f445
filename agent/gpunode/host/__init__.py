"""How gpunode touches a machine. The Host value itself is in gpunode.host.seam; this package
file stays empty so that the gate can start its NVML read (gpunode.host.gpu) before anything
else of the host is imported."""
