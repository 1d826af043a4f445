"""Names vulture (tests/test_dead_code.py) reports as unused that are used, each with why.
vulture parses this file; nothing imports it. Checks (@check), typer commands (@*.command,
@*.callback) are registered by their decorator and ignored through --ignore-decorators."""
# ruff: noqa: B018, F821

# Read by a framework, not by a name in gpunode's code
__getattr__  # cli/__init__.py: PEP 562 module __getattr__ (gpunode.cli.app built on first use)
_.__signature__  # cli/gate_cmd.py: typer builds `gate`'s options from the signature set here
_.__annotations__  # cli/gate_cmd.py: ... and from its annotations
_.__doc__  # cli/gate_cmd.py: ... and its help from the docstring
nagios  # cli/common.py: Format.nagios, an --format choice typer offers by the enum's values
_.overflow  # layout.py: a rich Column attribute rich reads when it renders
_.on_broken_pipe  # cli/streams.py: rich's Console calls it when stdout's reader is gone
frame  # cli/diag_cmd.py: the signal handler's second argument (signal.signal's calling convention)
object_hook  # watch/state.py _Strict: fields CPython's C JSON scanner reads from its decoder
object_pairs_hook  # watch/state.py _Strict: (same)
parse_float  # watch/state.py _Strict: (same)
parse_int  # watch/state.py _Strict: (same)
parse_constant  # watch/state.py _Strict: (same)

# Dispatched by name: getattr(self, f"_{action}") over the watch policy's action words
_._record  # slurm/watch_actions.py
_._none  # slurm/watch_actions.py
_._drain  # slurm/watch_actions.py
_._reboot  # slurm/watch_actions.py
_._reset  # slurm/watch_actions.py
_._resume  # slurm/watch_actions.py

# Recorded data: dataclass fields written to snapshots/JSON documents (asdict/to_json) and
# read back by replay; no check judges them yet, the record keeps them for people and tools
pci_subsystem_id  # host/gpu/model.py GpuInfo (and set in host/gpu/nvml.py)
_.pci_subsystem_id
ecc_corrected_volatile  # GpuInfo
_.ecc_corrected_volatile
ecc_corrected_aggregate  # GpuInfo
_.ecc_corrected_aggregate
temperature_shutdown_c  # GpuInfo
_.temperature_shutdown_c
temperature_gpu_max_c  # GpuInfo
_.temperature_gpu_max_c
memory_total_bytes  # GpuInfo
_.memory_total_bytes
memory_reserved_bytes  # GpuInfo
_.memory_reserved_bytes
nvml_version  # GpuInventory
_.nvml_version
collect_s  # GpuInventory: how long the NVML read took
_.collect_s
pcie_max_width  # host/gpu/sample.py Sample (telemetry trace)
ecc_corrected  # Sample
_.ecc_corrected
peak_source  # baselines/schema.py Expectation: where a baseline's datasheet peak came from
false_links  # fleet/locate/simulate.py Score: reported by the simulator's JSON (benchmarks/results)

# Plug-in signatures: every pair test takes both ends' addresses; the ones shown take only one
a_addr  # fleet/locate/pairtests.py (tcp, ib, nccl pair tests)

# Unused today, in a file another session was editing when this list was made (issue 21 note)
CHAIN_NAME  # slurm/chain.py: CHAIN_NAMES["health-check"]; drop it once chain.py settles
