"""perftest's ib_write_bw: the result parser (shared with fleet locate's ib pair test) and a
GPUDirect RDMA step for bench: on each active RDMA port, a loopback ib_write_bw whose buffers
are GPU memory (`--use_cuda=<GPU>`), so the NIC reads and writes the GPU directly.

A server and a client on the same port of the same HCA (client -> localhost): the figure is
what the HCA moves between GPU memory and the wire and back, in GB/s (1e9 bytes/s; perftest
reports Gb/s with --report_gbits). Skipped with why where ib_write_bw is not installed or was
built without CUDA (its --help does not document --use_cuda).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Sequence

from gpunode.bench.results import Metric, errored, skipped

NAME = "rdma.gdr_write_bw"
BINARY = "ib_write_bw"
BASE_PORT = 18615  # perftest's default is 18515; an own range keeps clear of a running test
INSTALL_HINT = "perftest's ib_write_bw is not installed (apt install perftest; a CUDA build for --use_cuda)"
_IB_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*\Z")


def parse_ib_write_bw(text: str) -> float | None:
    """perftest's result row under `#bytes #iterations BW peak[Gb/sec] BW average[Gb/sec] MsgRate[Mpps]`:
    the BW average of the last row (one row unless -a). None without the header or a row."""
    if "BW average[Gb/sec]" not in text:
        return None  # no header (or MB/sec: callers always pass --report_gbits)
    after = text.split("BW average[Gb/sec]", 1)[1]
    rows = [_IB_ROW.match(line) for line in after.splitlines()]
    found = [m for m in rows if m]
    return float(found[-1].group(4)) if found else None


def supports_cuda(help_text: str) -> bool:
    """perftest documents --use_cuda=<cuda device id> only when built with CUDA."""
    return "--use_cuda" in help_text


def argv(binary: str, device: str, port_num: int, gpu: int, tcp_port: int, seconds: int,
         server: str | None = None) -> list[str]:
    """One side of the loopback: the server (server None) or the client connecting to `server`."""
    out = [binary, "-d", device, "-i", str(port_num), f"--use_cuda={gpu}", "--report_gbits", "-D", str(seconds),
           "-p", str(tcp_port)]
    return out + [server] if server else out


def run_gdr(runner, binary: str, device: str, port_num: int, gpu: int, index: int, seconds: int = 3,
            start_delay: float = 1.0) -> Metric:
    """Server in a thread, then the client a moment later (perftest's client does not retry)."""
    tcp_port = BASE_PORT + index
    timeout = seconds + 30
    cond = {"device": f"{device}/{port_num}", "gpu": gpu, "test": "ib_write_bw loopback, --use_cuda",
            "seconds": seconds, "aggregate": "BW average of the client, Gb/s / 8"}
    server_out: dict = {}

    def serve() -> None:
        server_out["r"] = runner.run(argv(binary, device, port_num, gpu, tcp_port, seconds), timeout=timeout)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    time.sleep(start_delay)
    client = runner.run(argv(binary, device, port_num, gpu, tcp_port, seconds, "localhost"), timeout=timeout)
    thread.join(timeout + 5)
    gbits = parse_ib_write_bw(client.stdout)
    if client.error:
        return errored(NAME, "GB/s", client.error, **cond)
    if gbits is None or not client.ok:
        tail = (client.stderr or client.stdout).strip().splitlines()
        why = "timed out" if client.timed_out else f"exit {client.rc}"
        return errored(NAME, "GB/s", f"ib_write_bw gave no figure ({why}: {tail[-1][:160] if tail else 'no output'})",
                       **cond)
    return Metric(NAME, gpu, round(gbits / 8, 3), "GB/s", "PASS", "", cond, None,
                  {"gbits": gbits, "server_rc": getattr(server_out.get("r"), "rc", None)})


def steps(runner, ports: Sequence, gpus: Sequence[int], path_env: str, seconds: int = 3) -> list[tuple[str, object]]:
    """(label, callable -> list[Metric]) per active RDMA port, with the first chosen GPU."""
    binary = shutil.which(BINARY, path=path_env)
    if binary is None:
        return [("GPUDirect RDMA", lambda: [skipped(NAME, "GB/s", INSTALL_HINT)])]
    active = [p for p in ports if p.active]
    if not active:
        return [("GPUDirect RDMA", lambda: [skipped(NAME, "GB/s", "no active RDMA port")])]
    if not gpus:
        return [("GPUDirect RDMA", lambda: [skipped(NAME, "GB/s", "no GPU to put the buffers on")])]
    help_result = runner.run([binary, "--help"], timeout=10)
    if not supports_cuda(help_result.stdout + help_result.stderr):
        why = "ib_write_bw was built without CUDA (--help documents no --use_cuda): rebuild perftest with CUDA"
        return [("GPUDirect RDMA", lambda: [skipped(NAME, "GB/s", why)])]
    return [(f"GPUDirect RDMA {p.name}",
             lambda p=p, i=i: [run_gdr(runner, binary, p.device, p.port, gpus[0], i, seconds)])
            for i, p in enumerate(active)]
