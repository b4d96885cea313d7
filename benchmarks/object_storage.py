"""Object storage (loopback S3): segflow's stores on ``s3://`` against the same stores on disk.

Starts its own S3 API server (moto's standalone server, ``python -m moto.server``) on 127.0.0.1,
creates a bucket, points this process and its children at it (``AWS_ENDPOINT_URL`` and test
credentials) and stops it at the end. Three parts, each selectable with ``--part``:

- ingest: the ``ingest-dataset`` flow, in this process, from the same local source folder into
  a fresh local store and into a fresh ``s3://`` store, in turns (local, s3, local, s3, ...),
  ``--repeats`` rounds, the same Dask cluster of ``--workers`` processes for both (started once
  before timing, its start printed, not timed; warmed up by one untimed ingest into each
  target). Throughput: MB/s of decoded pixels (image + mask); ratio s3/local (issue 16: >= 0.8).
- infer: the ``infer-images`` flow, in this process, with one fixed model (a base-16 U-Net,
  random init, seed 0: weights do not matter for speed), on the dataset store ingested from the
  same source; in turns: local store -> local predictions, local store -> ``s3://``
  predictions, ``s3://`` store -> ``s3://`` predictions. segflow's default parallelism (on 2
  cores: one worker, in-process) unless ``--infer-workers``. Each run starts cold (the
  process's cache of opened inputs, which for a remote store holds fetched bytes, is emptied).
  Throughput: MP/s of input pixels, including the prediction store's creation and pyramids;
  ratio to local -> local (issue 16: >= 0.8).
- rss: peak memory of ``segflow infer s3://.../ds.zarr s3://.../pred.zarr`` on one SIZE² grey
  image (``--size``, default 16384), as a subprocess; RSS of its whole process tree sampled
  every 50 ms (issue 16: <= 3 GB). The input is built once: a tiled BigTIFF generated locally
  (``segflow.tasks.demo.large``), ingested by ``segflow ingest`` into a dataset store on the
  server (that ingest's time and peak are printed too). The server's own RSS is printed
  beside it, not counted: moto holds every object in its own memory.

What this measures: segflow's object-storage path (s3fs, zarr's FsspecStore, HTTP requests,
segflow's staged writes and whole-shard reads, remote read caches) against a local server.
moto is a Python HTTP server (werkzeug) in a process of its own on loopback, holding objects
in memory: no network latency or bandwidth limit, but every request costs Python CPU on the
same cores as segflow (its CPU seconds and the requests it served are printed per run; the
JSON rows count them by method and by kind: chunk, metadata, list; ingest rows also per pair).
It is not a measurement of real S3 (or MinIO) throughput.

Rows are printed as markdown tables and appended as JSON lines (one per timed run, one summary
per part, with date, machine and load average) to ``--out``. Run:

    .venv/bin/python benchmarks/object_storage.py --out benchmarks/results/object_storage.jsonl
    .venv/bin/python benchmarks/object_storage.py --part rss --size 16384

Small check (a few minutes): ``--limit 2 --repeats 2 --size 2048``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from segflow.flows.env import use_local_defaults

use_local_defaults()
# The flows' INFO lines (dozens per run) would bury the rounds and tables printed here.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import psutil  # noqa: E402
import s3fs  # noqa: E402
import torch  # noqa: E402
import zarr  # noqa: E402
from distributed import Client  # noqa: E402
from ingest_large_rss import tree_rss  # noqa: E402
from machine import machine  # noqa: E402
from reference_loop import DATASETS  # noqa: E402

from segflow.flows.config import InferConfig, IngestConfig  # noqa: E402
from segflow.flows.infer import infer_images  # noqa: E402
from segflow.flows.ingest import ingest_dataset  # noqa: E402
from segflow.models.unet import build_unet  # noqa: E402
from segflow.tasks.demo.large import write_large_pair  # noqa: E402
from segflow.tasks.infer.sources import forget_opened  # noqa: E402
from segflow.tasks.ingest.pairs import find_pairs  # noqa: E402
from segflow.tasks.runtime.cluster import dask_client  # noqa: E402
from segflow.tasks.storage.bundle import save_bundle  # noqa: E402
from segflow.tasks.storage.dataset import open_dataset  # noqa: E402
from segflow.tasks.storage.dataset_writer import committed_samples  # noqa: E402
from segflow.tasks.storage.grid import blocks  # noqa: E402
from segflow.tasks.storage.predictions import block_done  # noqa: E402
from segflow.tasks.storage.urls import open_group  # noqa: E402

CREDENTIALS = {  # moto accepts any; the same as tests/servers.py
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "segflow-bench"
PARTS = ("ingest", "infer", "rss")


# --- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A running moto server: its endpoint, process (for its RSS and CPU time) and request log
    (one line per request: what a run asked of the storage)."""

    endpoint: str
    process: psutil.Process
    log: Path

    def mark(self) -> tuple[float, int]:
        """Where the server stands now: (its CPU seconds, the size of its request log)."""
        times = self.process.cpu_times()
        return times.user + times.system, self.log.stat().st_size

    def since(self, mark: tuple[float, int]) -> tuple[float, dict[str, int]]:
        """(CPU seconds the server used, requests it served by HTTP method and kind of object,
        :func:`request_kind`) since `mark`."""
        cpu, offset = self.mark()
        with self.log.open("rb") as log:
            log.seek(mark[1])
            lines = log.read(offset - mark[1]).decode(errors="replace").splitlines()
        found = [m.groups() for m in map(REQUEST.search, lines) if m]
        kinds = Counter(f"{method} {request_kind(target)}" for method, target in found)
        return cpu - mark[0], dict(sorted(kinds.items()))


# What werkzeug logs for each request: `... "GET /bucket/key HTTP/1.1" 200 -`.
REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/1\.1"')


def request_kind(target: str) -> str:
    """What a request's target (``/bucket/key?query``) names: ``list`` (a listing), ``chunk``
    (a Zarr chunk or shard, ``/c/`` in its key), ``metadata`` (a ``zarr.json``) or ``other``."""
    path, _, query = target.partition("?")
    if "list-type=" in query or "prefix=" in query:
        return "list"
    if "/c/" in path:
        return "chunk"
    return "metadata" if path.endswith("/zarr.json") else "other"


def by_method(requests: dict[str, int]) -> dict[str, int]:
    """Requests by method from requests by method and kind."""
    methods: Counter = Counter()
    for key, count in requests.items():
        methods[key.split()[0]] += count
    return dict(sorted(methods.items()))


@dataclass(frozen=True)
class Run:
    """One timed run: its throughput, and what the server did meanwhile."""

    rate: float
    seconds: float
    moto_cpu_s: float
    requests: dict[str, int]

    def fields(self, unit: str) -> dict:
        """The run as JSON fields, its rate named `unit`."""
        total = sum(self.requests.values())
        return {
            unit: round(self.rate, 3),
            "seconds": round(self.seconds, 3),
            "moto_cpu_s": round(self.moto_cpu_s, 2),
            "requests": total,
            "requests_by_method": by_method(self.requests),
            "requests_by_kind": self.requests,
        }


def timed(server: Server, work: Callable[[], float]) -> Run:
    """Run `work` (it returns the amount done: MB, MP) and time it; rate = amount / s."""
    mark = server.mark()
    begin = time.perf_counter()
    amount = work()
    seconds = time.perf_counter() - begin
    cpu, requests = server.since(mark)
    return Run(amount / seconds, seconds, cpu, requests)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[Server]:
    """moto's S3 server on a free loopback port, with this process's AWS variables pointing at
    it (children inherit them: start Dask clusters after this); stopped on exit."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}: see {log}")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{endpoint}: no answer within 60 s") from None
                time.sleep(0.1)
        os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
        s3fs.S3FileSystem.clear_instance_cache()
        yield Server(endpoint, psutil.Process(process.pid), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def s3() -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem()


def remove(location: str | Path) -> None:
    """Delete a local store or every object under an ``s3://`` prefix (untimed)."""
    if str(location).startswith("s3://"):
        with contextlib.suppress(FileNotFoundError):
            s3().rm(str(location), recursive=True)
        s3().invalidate_cache()
    else:
        shutil.rmtree(location, ignore_errors=True)


# --- records -------------------------------------------------------------------------------------


def storage_machine() -> dict:
    """:func:`machine.machine` and the versions of the storage stack."""
    import moto

    versions = {"zarr": zarr.__version__, "s3fs": s3fs.__version__, "moto": moto.__version__}
    return machine() | versions


class Recorder:
    """Appends rows (with the machine, the command line and the current load average) to a
    JSON lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.common = {**storage_machine(), "command": " ".join(sys.argv)}
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, **row) -> None:
        load = [round(x, 2) for x in os.getloadavg()]
        with self.path.open("a") as out:
            out.write(json.dumps({**row, "loadavg": load, **self.common}) + "\n")


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(runs: dict[str, list[Run]]) -> dict[str, dict[str, float]]:
    """Best and median rate of each method, for the summary rows."""
    return {
        "best": {name: round(max(r.rate for r in done), 3) for name, done in runs.items()},
        "median": {name: round(median([r.rate for r in done]), 3) for name, done in runs.items()},
    }


def print_comparison(title: str, unit: str, runs: dict[str, list[Run]]) -> dict[str, float]:
    """A markdown table of the runs of each method (best, median, every run, the server's CPU
    seconds and requests per run) and each method's ratio to the first: the median of the
    per-round ratios (the methods ran in turns, so the two runs of a round saw about the same
    load) and best over best. Returns the per-round medians."""
    base_name, base = next(iter(runs.items()))
    print(f"\n{title}\n")
    print(
        f"| method | best {unit} | median {unit} | runs {unit} | moto CPU s | requests | "
        f"/ {base_name} (median of rounds) | / {base_name} (best / best) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ratios: dict[str, float] = {}
    for name, done in runs.items():
        rates = [r.rate for r in done]
        best_base = max(r.rate for r in base)
        ratios[name] = median([r.rate / b.rate for r, b in zip(done, base, strict=True)])
        print(
            f"| {name} | {max(rates):.2f} | {median(rates):.2f} | "
            f"{', '.join(f'{r:.2f}' for r in rates)} | "
            f"{', '.join(f'{r.moto_cpu_s:.1f}' for r in done)} | "
            f"{median([sum(r.requests.values()) for r in done]):.0f} | "
            f"{ratios[name]:.2f}x | {max(rates) / best_base:.2f}x |"
        )
    return ratios


def in_turns(methods: dict[str, Callable[[], Run]], repeats: int) -> dict[str, list[Run]]:
    """Call every method once per round, `repeats` rounds; the runs of each method."""
    runs: dict[str, list[Run]] = {name: [] for name in methods}
    for round_ in range(repeats):
        for name, method in methods.items():
            run = method()
            runs[name].append(run)
            print(
                f"  round {round_ + 1}: {name}: {run.rate:.2f} in {run.seconds:.1f} s "
                f"(moto {run.moto_cpu_s:.1f} CPU s, {sum(run.requests.values())} requests)",
                flush=True,
            )
    return runs


# --- ingest --------------------------------------------------------------------------------------


def subset(source: Path, limit: int | None, into: Path) -> Path:
    """`source` itself, or a copy of its first `limit` image/mask pairs (images/, masks/)."""
    if not limit:
        return source
    pairs, _ = find_pairs(source, IngestConfig(source=str(source), store="x").pair_layout())
    for pair in pairs[:limit]:
        for kind, path in (("images", pair.image), ("masks", pair.mask)):
            (into / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into / kind / Path(path).name)
    return into


def decoded_bytes(store: str | Path) -> tuple[int, int]:
    """(bytes of every image and mask array, pixels of every image) of a dataset store."""
    dataset = open_dataset(store)
    samples = dataset.samples()
    nbytes = sum(dataset.image(s).nbytes + dataset.mask(s).nbytes for s in samples)
    pixels = sum(dataset.image(s).shape[-2] * dataset.image(s).shape[-1] for s in samples)
    return nbytes, pixels


def same_dataset(local: str | Path, remote: str) -> None:
    """The two stores hold the same committed samples (source checksums, class counts) and
    split, and the first sample's image and mask are identical."""
    a, b = open_dataset(local), open_dataset(remote)
    if committed_samples(local) != committed_samples(remote) or a.meta["split"] != b.meta["split"]:
        raise SystemExit(f"{remote} does not hold what {local} holds")
    first = a.samples()[0]
    if not (
        (a.image(first)[...] == b.image(first)[...]).all()
        and (a.mask(first)[...] == b.mask(first)[...]).all()
    ):
        raise SystemExit(f"{remote}: sample {first} differs from {local}")


def ingest_config(source: Path, store: str, address: str, args) -> IngestConfig:
    return IngestConfig(
        source=str(source),
        store=store,
        workers=args.workers,
        dask_address=address,
        foreground_value=args.foreground_value,
    )


def ingest_part(args, server: Server, tmp: Path, record: Recorder) -> None:
    source = subset(args.source, args.limit, tmp / "subset")
    pairs = len(find_pairs(source, IngestConfig(source=str(source), store="x").pair_layout())[0])
    start = time.perf_counter()
    with dask_client(workers=args.workers) as client:
        print(f"Dask LocalCluster of {args.workers} workers: {time.perf_counter() - start:.1f} s")
        address = client.scheduler.address
        warm = (str(tmp / "warm.zarr"), f"s3://{BUCKET}/warm.zarr")
        for store in warm:  # untimed: imports in the workers, Prefect's server, s3fs clients
            ingest_dataset(ingest_config(source, store, address, args))
        nbytes, _ = decoded_bytes(warm[0])
        same_dataset(*warm)
        for store in warm:
            remove(store)
        count = itertools.count()

        def ingest_into(kind: str) -> Callable[[], Run]:
            def method() -> Run:
                n = next(count)
                store = (
                    str(tmp / f"in-{n}.zarr") if kind == "local" else f"s3://{BUCKET}/in-{n}.zarr"
                )
                config = ingest_config(source, store, address, args)

                def work() -> float:
                    ingest_dataset(config)
                    return nbytes / 1e6

                run = timed(server, work)
                remove(store)
                per_pair = round(sum(run.requests.values()) / pairs, 1)
                record(
                    part="ingest",
                    kind="run",
                    method=kind,
                    **run.fields("mb_s"),
                    requests_per_pair=per_pair,
                    **common,
                )
                return run

            return method

        common = {"pairs": pairs, "decoded_mb": round(nbytes / 1e6, 1), "workers": args.workers}
        common |= {"source": str(args.source), "limit": args.limit}
        runs = in_turns({"local": ingest_into("local"), "s3": ingest_into("s3")}, args.repeats)
    title = (
        f"Ingest: {pairs} pairs from {args.source}, {nbytes / 1e6:.0f} MB decoded, "
        f"{args.workers} Dask workers (cluster started once), {args.repeats} rounds in turns"
    )
    ratios = print_comparison(title, "MB/s", runs)
    # Per pair, with the run's fixed requests (store creation, index) spread over its pairs.
    per_pair = median([sum(r.requests.values()) for r in runs["s3"]]) / pairs
    kinds = Counter()
    for run in runs["s3"]:
        kinds.update(run.requests)
    print(f"\ns3 requests per pair: {per_pair:.1f} (median run); by kind, per pair:")
    for kind, count in sorted(kinds.items()):
        print(f"  {kind}: {count / len(runs['s3']) / pairs:.2f}")
    record(
        part="ingest",
        kind="summary",
        **spread(runs),
        ratio_s3_local=round(ratios["s3"], 3),
        requests_per_pair=round(per_pair, 1),
        target=">= 0.8",
        repeats=args.repeats,
        **common,
    )


# --- infer ---------------------------------------------------------------------------------------


def make_bundle(path: Path, channels: int) -> Path:
    """A base-16, depth-4 U-Net bundle, random init (seed 0): the weights do not change the
    work done."""
    torch.manual_seed(0)
    model = build_unet(in_channels=channels, num_classes=1, depth=4, base_channels=16)
    return save_bundle(
        path,
        config=model.config,
        state_dicts=[model.eval().state_dict()],
        mean=(128.0,) * channels,
        std=(64.0,) * channels,
        class_names=("background", "foreground"),
    )


def infer_part(args, server: Server, tmp: Path, record: Recorder) -> None:
    source = subset(args.source, args.limit, tmp / "subset")
    local_in, remote_in = str(tmp / "infer-in.zarr"), f"s3://{BUCKET}/infer-in.zarr"
    with dask_client(workers=args.workers) as client:
        for store in (local_in, remote_in):
            ingest_dataset(ingest_config(source, store, client.scheduler.address, args))
    same_dataset(local_in, remote_in)
    _, pixels = decoded_bytes(local_in)
    first = open_dataset(local_in).samples()[0]
    bundle = make_bundle(tmp / "bundle", open_dataset(local_in).image(first).shape[0])
    methods = {
        "local -> local": (local_in, str(tmp / "pred.zarr")),
        "local -> s3": (local_in, f"s3://{BUCKET}/pred-a.zarr"),
        "s3 -> s3": (remote_in, f"s3://{BUCKET}/pred-b.zarr"),
    }
    cluster = (
        dask_client(workers=args.infer_workers)
        if args.infer_workers and args.infer_workers > 1
        else contextlib.nullcontext()
    )
    with cluster as client:
        address = client.scheduler.address if client is not None else None

        def infer(pair: tuple[str, str], *, keep: bool = False) -> Run:
            given, output = pair
            remove(output)
            forget_opened()  # a fresh process's cold reads: no opened store, no cached bytes
            if address:
                with Client(address) as other:
                    other.run(forget_opened)
            config = InferConfig(
                input=given,
                output=output,
                model=str(bundle),
                workers=args.infer_workers,
                dask_address=address,
            )

            def work() -> float:
                summary = infer_images(config)
                if summary.failed or summary.images == 0:
                    raise SystemExit(f"infer {given} -> {output} failed: {summary}")
                return pixels / 1e6

            run = timed(server, work)
            if not keep:
                remove(output)
            return run

        for pair in (methods["local -> local"], methods["s3 -> s3"]):  # warm: imports, kernels
            infer(pair, keep=True)
        same_predictions(methods["local -> local"][1], methods["s3 -> s3"][1], first)
        common = {"megapixels": round(pixels / 1e6, 2), "source": str(args.source)}
        common |= {"limit": args.limit, "workers": args.infer_workers}

        def infer_with(name: str) -> Callable[[], Run]:
            def method() -> Run:
                run = infer(methods[name])
                record(part="infer", kind="run", method=name, **run.fields("mp_s"), **common)
                return run

            return method

        runs = in_turns({name: infer_with(name) for name in methods}, args.repeats)
    parallel = InferConfig(input="x", output="y", workers=args.infer_workers).parallelism()
    title = (
        f"Infer: {len(open_dataset(local_in).samples())} images from {args.source}, "
        f"{pixels / 1e6:.1f} MP, base-16 U-Net, {parallel.workers} worker(s) x "
        f"{parallel.torch_threads} threads, segflow's defaults (precision auto), "
        f"{args.repeats} rounds in turns"
    )
    ratios = print_comparison(title, "MP/s", runs)
    record(
        part="infer",
        kind="summary",
        **spread(runs),
        megapixels=round(pixels / 1e6, 2),
        ratios={k: round(v, 3) for k, v in ratios.items()},
        target=">= 0.8",
        repeats=args.repeats,
        workers=parallel.workers,
        source=str(args.source),
        limit=args.limit,
    )


def same_predictions(local: str, remote: str, name: str) -> None:
    """The stored mask of image `name` is the same in both prediction stores."""
    key = f"{name}/labels/mask/0"
    if not (open_group(local)[key][...] == open_group(remote)[key][...]).all():
        raise SystemExit(f"{remote}: mask of {name} differs from {local}")


# --- rss -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peaks:
    """One CLI run: wall seconds, peak RSS (bytes) of the process, of its whole process tree and
    of the moto server, and the server's CPU seconds and requests meanwhile."""

    seconds: float
    process: int
    tree: int
    moto: int
    moto_cpu_s: float
    requests: dict[str, int]

    def fields(self) -> dict:
        """The run as JSON fields (MiB)."""
        return {
            "seconds": round(self.seconds, 2),
            "peak_process_mib": round(self.process / 2**20),
            "peak_tree_mib": round(self.tree / 2**20),
            "moto_peak_mib": round(self.moto / 2**20),
            "moto_cpu_s": round(self.moto_cpu_s, 1),
            "requests": sum(self.requests.values()),
            "requests_by_method": by_method(self.requests),
            "requests_by_kind": self.requests,
        }


def segflow(args: list[str], log: Path, env: dict, server: Server) -> Peaks:
    """Run the segflow CLI, sampling RSS every 50 ms (its tree: the CLI process, Prefect's
    temporary server, Dask's workers; and the moto server, apart)."""
    command = [sys.executable, "-m", "segflow.flows.cli", *args]
    mark = server.mark()
    start = time.perf_counter()
    own = tree = moto = 0
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the CLI
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            a, b = tree_rss(watched)
            own, tree = max(own, a), max(tree, b)
            with contextlib.suppress(psutil.NoSuchProcess):
                moto = max(moto, server.process.memory_info().rss)
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print(log.read_text(errors="replace")[-4000:])
        raise SystemExit(f"segflow {args[0]} failed with exit code {proc.returncode}")
    cpu, requests = server.since(mark)
    return Peaks(seconds, own, tree, moto, cpu, requests)


def check_predictions(out: str, size: int, block: int) -> int:
    """Every block of the image ``large`` is written and the arrays have its shape; the
    number of blocks."""
    regions = blocks((size, size), block)
    missing = [r for r in regions if not block_done(out, "large", r, block)]
    root = open_group(out)
    shapes = {root["large/0"].shape, root["large/labels/mask/0"].shape}
    if missing or shapes != {(1, size, size)}:
        raise SystemExit(f"{len(missing)} of {len(regions)} blocks missing; shapes {shapes}")
    return len(regions)


def rss_part(args, server: Server, tmp: Path, record: Recorder) -> None:
    start = time.perf_counter()
    write_large_pair(tmp / "rss-src", size=args.size, seed=0)
    print(f"generated a {args.size}² grey tiled TIFF + mask in {time.perf_counter() - start:.0f} s")
    # A Prefect home of its own: this process's temporary server may be using the default one.
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect")}
    store, out = f"s3://{BUCKET}/rss/ds.zarr", f"s3://{BUCKET}/rss/pred.zarr"
    ingest = ["ingest", str(tmp / "rss-src"), store, "--val-fraction", "0", "--test-fraction", "0"]
    built = segflow([*ingest, "--workers", str(args.workers)], tmp / "ingest.log", env, server)
    print(
        f"built the input: segflow ingest into {store} ({args.workers} workers, incl. a new "
        f"Prefect home): {built.seconds:.1f} s, {args.size**2 * 2 / 1e6 / built.seconds:.1f} MB/s "
        f"decoded; peak RSS process {built.process / 2**20:.0f} MiB, tree "
        f"{built.tree / 2**20:.0f} MiB; moto server {built.moto / 2**20:.0f} MiB, "
        f"{sum(built.requests.values())} requests"
    )
    record(part="rss", kind="build", size=args.size, workers=args.workers, **built.fields())
    bundle = make_bundle(tmp / "bundle1", 1)
    block = InferConfig.model_fields["block"].default
    megapixels = args.size * args.size / 1e6
    print(
        f"\nPeak RSS, segflow infer {store} -> {out}, {args.size}² grey, base-16 U-Net, defaults\n"
    )
    print(
        "| workers | wall s | MP/s | peak RSS flow process | **peak RSS process tree** | "
        "moto server (apart) | requests |"
    )
    print("|---|---|---|---|---|---|---|")
    for workers in args.rss_workers or [None]:
        remove(out)
        infer = ["infer", store, out, "--model", str(bundle), "--block", str(block)]
        infer += ["--workers", str(workers)] if workers else []
        run = segflow(infer, tmp / "infer.log", env, server)
        count = check_predictions(out, args.size, block)
        verdict = "met" if run.tree <= 3e9 else "missed"
        print(
            f"| {workers or 'default'} | {run.seconds:.1f} | {megapixels / run.seconds:.2f} | "
            f"{run.process / 2**20:.0f} MiB | **{run.tree / 2**20:.0f} MiB** "
            f"(<= 3 GB: {verdict}) | {run.moto / 2**20:.0f} MiB | "
            f"{sum(run.requests.values())} |",
            flush=True,
        )
        record(
            part="rss",
            kind="summary",
            size=args.size,
            workers=workers,
            block=block,
            blocks=count,
            mp_s=round(megapixels / run.seconds, 3),
            target="<= 3 GB",
            **run.fields(),
        )
    print(f"every block of {block}² written (block_done), arrays of shape (1, {args.size}, ...)")


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--source", type=Path, default=DATASETS["hrf"][0])
    parser.add_argument("--foreground-value", type=int, help="as segflow ingest's option")
    parser.add_argument("--limit", type=int, help="only the first N pairs of --source")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="ingest's Dask workers")
    parser.add_argument(
        "--infer-workers", type=int, help="infer's workers (default: segflow's, 1 on 2 cores)"
    )
    parser.add_argument("--size", type=int, default=16384, help="rss: image side")
    parser.add_argument(
        "--rss-workers", type=int, nargs="*", default=[], help="rss: one run per count"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/object_storage.jsonl"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segflow-s3-bench-"))
    record = Recorder(args.out)
    print(f"load average at start: {os.getloadavg()}")
    try:
        with moto_server(tmp / "moto.log") as server:
            s3().mkdir(BUCKET)
            print(f"moto {record.common['moto']} S3 server at {server.endpoint}, bucket {BUCKET}")
            parts = {"ingest": ingest_part, "infer": infer_part, "rss": rss_part}
            for name in PARTS:
                if name in args.part:
                    parts[name](args, server, tmp, record)
    finally:
        print(f"\nload average at end: {os.getloadavg()}; rows appended to {args.out}")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
