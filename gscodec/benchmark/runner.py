"""``gsi bench``: rate-distortion benchmark of gscodec against image-codec peers.

Entry points for the CLI: ``add_arguments(parser)`` and ``run(args) -> int``;
``main(argv)`` for a stand-alone call (benchmarks/rd.py).

Results go to one folder per dataset, in the layout of CompressAI's published results
(``--out``, default ``benchmarks/results/<dataset>/`` in the repository):
  <codec>.json   one file per codec configuration (gsi.json, gsi-gi.json, gsi-ssim.json,
                 jpeg.json, webp.json, jpeg2000.json, avif.json, jxl.json, heic.json,
                 heic420.json), overwritten in place: CompressAI's schema
                 {"name", "description", "meta", "results": {"psnr-rgb", "ms-ssim-rgb", "bpp",
                 "encoding_time", "decoding_time", <knob>}} plus "per_image" points; "meta"
                 stamps the git commit, the encoder fingerprint, effort/iterations and the
                 dataset name (relative, never an absolute path)
  bdrate.json    BD-rate (PSNR, MS-SSIM) of gsi against every other codec in the folder
                 measured on the same images, and against published anchors when given
  rd.png         RD plot, PSNR and MS-SSIM panels
  summary.txt    the printed tables and BD-rates
  cache.jsonl    one JSON line per (codec, image, rate point, settings + encoder fingerprint):
                 a re-run computes only what is missing (resume), whether with --jobs or --ray
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

from . import bdrate as _bd
from .executors import ray_init, run_pool, run_ray, run_serial
from .peers import ALL_CODECS, GSI_CODECS, canonical, encoder_fingerprint, make_codec
from .provenance import (
    command_line,
    dataset_name,
    default_anchors_dir,
    default_dataset,
    default_out,
    git_state,
    is_kodak,
    iterations_meta,
    list_images,
    machine_info,
    rel_path,
)
from .report import (
    aggregate,
    bd_table,
    format_codec_table,
    load_anchors,
    load_folder_results,
    results_json,
)
from .tasks import CACHE_NAME, BenchError, append_row, joint_tasks, jsonable, make_tasks, read_cache

EFFORTS = ("fast", "default", "max")

BENCH_DESCRIPTION = (
    "Rate-distortion benchmark of gscodec against JPEG, WebP, JPEG 2000, AVIF, JPEG XL\n"
    "and HEIC (HEVC intra, 4:4:4 and 4:2:0) (needs the [bench] extras; --ray needs\n"
    "[cluster]). Writes one folder per dataset in the layout of CompressAI's published\n"
    "results.")


# --------------------------------------------------------------------------- arguments

def _floats(items):
    out = []
    for it in items:
        for s in str(it).split(","):
            s = s.strip()
            if s:
                out.append(float(s))
    return out

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "outputs (in --out, default benchmarks/results/<dataset>/):\n"
        "  <codec>.json  CompressAI results schema + per-image points, stamped with the git\n"
        "                commit, encoder fingerprint, effort/iterations and dataset name\n"
        "  bdrate.json   BD-rate of gsi against the other codecs (and published anchors)\n"
        "  rd.png        RD plot (PSNR and MS-SSIM);  summary.txt  the printed tables\n"
        "  cache.jsonl   finished encodes: a re-run computes only what is missing\n"
        "\n"
        "examples:\n"
        "  gsi bench ../shared/datasets/kodak --jobs 2 --anchors\n"
        "  gsi bench ../shared/datasets/kodak --ray                  # local Ray, all CPUs\n"
        "  gsi bench ../shared/datasets/kodak --ray=ray://head:10001 # a Ray cluster (GPUs used)")
    p.add_argument("dataset", nargs="?", default=None,
                   help="folder of PNG images (default: ../shared/datasets/kodak beside the "
                        "checkout)")
    p.add_argument("--points", nargs="+", default=None, metavar="DENSITY",
                   help="gsi rate points as Gaussian densities in Gaussians per 1000 pixels "
                        "(N = round(density*W*H/1000)); e.g. --points 2,4,8,16 (the default)")
    p.add_argument("--effort", choices=EFFORTS, default="default",
                   help="gsi encoder effort preset passed to gscodec.encode (default: default)")
    p.add_argument("--iterations", type=int, default=None,
                   help="gsi fitting iterations passed to gscodec.encode (default: set by "
                        "--effort)")
    p.add_argument("--codecs", default=",".join(ALL_CODECS),
                   help=f"comma-separated subset of {','.join(ALL_CODECS)} (default: all)")
    p.add_argument("--quality", action="append", default=[], metavar="CODEC=Q1,Q2,...",
                   help="override a peer's rate points (JPEG/WebP/AVIF/JXL/HEIC quality; JPEG "
                        "2000 target bpp); repeat for several peers")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="use only the first N images")
    p.add_argument("--device", default="auto",
                   help="device for gscodec (auto, cpu, cuda; default auto); --ray on a cluster "
                        "with GPUs encodes gsi on cuda")
    p.add_argument("--seed", type=int, default=0, help="seed passed to gscodec.encode (default 0)")
    p.add_argument("--name", default=None,
                   help="dataset name: the results folder and the 'dataset' stamp (default: the "
                        "dataset folder's name, e.g. kodak)")
    p.add_argument("--out", default=None,
                   help="output folder (default: benchmarks/results/<name>/ in the repository, "
                        "else results/<name>/)")
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="parallel worker processes (spawn), one torch thread each when > 1 "
                        "(default 1); with a local --ray, the number of CPUs Ray may use")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the encodes as Ray tasks (pip install 'gscodec[cluster]'): without "
                        "ADDRESS on a local Ray (num_cpus=--jobs, else all CPUs), with one "
                        "(--ray=ADDRESS, e.g. ray://head:10001 or auto) on that cluster; gsi tasks "
                        "ask for one GPU each where the cluster has GPUs (and encode on cuda), "
                        "the peers one CPU. Same cache and numbers "
                        "as --jobs; gscodec must be installed on the cluster's nodes")
    p.add_argument("--anchors", action="store_true",
                   help="draw published anchors (Kodak) dashed on the plot")
    p.add_argument("--anchors-dir", default=None,
                   help="folder of published results JSON, used for BD-rates and --anchors "
                        "(default: ../shared/anchors/kodak when the dataset is Kodak)")
    p.add_argument("--no-plot", action="store_true", help="skip rd.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# --------------------------------------------------------------------------- run

def _log(msg=""):
    print(msg, flush=True)

def _peer_points(specs: list[str]) -> dict:
    out = {}
    for s in specs:
        if "=" not in s:
            raise ValueError(f"--quality expects CODEC=Q1,Q2,..., got {s!r}")
        name, vals = s.split("=", 1)
        out[canonical(name)] = _floats([vals])
    return out

def run(args) -> int:
    try:
        return _run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    t_start = time.perf_counter()
    # ---- `--ray DATASET`: the optional address swallowed the dataset folder
    if args.ray and args.dataset is None and Path(args.ray).is_dir():
        args.dataset, args.ray = args.ray, ""
    if args.jobs is not None and args.jobs < 1:
        raise BenchError("--jobs must be at least 1")
    dataset, images, name, kodak = _dataset(args)
    codecs, skipped, gsi_opts = _codecs(args)
    ray = ray_started = None
    if args.ray is not None:  # before any work: a missing Ray is a one-line error
        ray, ray_started = ray_init(args.ray or None, None if args.ray else args.jobs)
    out = Path(args.out) if args.out else default_out(name)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / CACHE_NAME
    cached = read_cache(cache_path)
    tasks = make_tasks(codecs, images, cached, gsi_opts)
    jobs = max(1, int(args.jobs or 1))
    total_units = sum(len(c.points) for c in codecs) * len(images)
    _log(f"dataset {name} ({len(images)} images{', Kodak' if kodak else ''}); codecs "
         f"{', '.join(c.name for c in codecs)}; {total_units} units, "
         f"{total_units - len(tasks)} cached, {len(tasks)} to compute; "
         f"{_executor_name(args, ray, jobs)}")
    failures = []
    try:
        if tasks and _compute(args, tasks, cached, cache_path, ray, jobs, failures) is None:
            return 130
    finally:
        if ray_started:
            ray.shutdown()
    base_meta = _run_meta(args, dataset, out, name, images, ray, jobs, skipped)
    _write_report(args, out, name, images, kodak, codecs, cached, base_meta, skipped,
                  failures)
    _log(f"results in {out}/ ({time.perf_counter() - t_start:.1f} s)")
    return 1 if failures else 0


def _dataset(args):
    """(dataset folder, images, name, whether it is Kodak) from the options."""
    if args.dataset:
        dataset = Path(args.dataset)
        if not dataset.is_dir():
            raise BenchError(f"dataset folder {dataset} does not exist")
    else:
        dataset = default_dataset()
        if dataset is None:
            raise BenchError("give a dataset folder (a folder of PNG images, e.g. Kodak or DIV2K)")
    images = list_images(dataset, args.images)
    if not images:
        raise BenchError(f"no PNG images in {dataset}")
    name = args.name or dataset_name(dataset)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise BenchError(f"--name must be a plain folder name, got {name!r}")
    return dataset, images, name, is_kodak(dataset, images)


def _codecs(args):
    """(the available codecs with their points, [(skipped codec, why)], gsi options)."""
    try:
        names = []
        for n in str(args.codecs).split(","):
            if n.strip():
                c = canonical(n)
                if c not in names:
                    names.append(c)
        overrides = _peer_points(getattr(args, "quality", []) or [])
        densities = _floats(args.points) if args.points else None
    except ValueError as e:
        raise BenchError(str(e)) from None
    if densities is not None and any(d <= 0 for d in densities):
        raise BenchError("--points densities must be positive")
    gsi_opts = {"iterations": args.iterations, "device": args.device, "seed": args.seed,
                "effort": getattr(args, "effort", "default")}
    codecs, skipped = [], []
    for n in names:
        pts = densities if n in GSI_CODECS else overrides.get(n)
        codec = make_codec(n, pts, **(gsi_opts if n in GSI_CODECS else {}))
        why = codec.unavailable()
        if why:
            skipped.append((n, why))
            _log(f"skipping {n}: {why}")
            continue
        codec.points = sorted(codec.points)
        codecs.append(codec)
    if not codecs:
        raise BenchError("none of the requested codecs is available")
    return codecs, skipped, gsi_opts


def _executor_name(args, ray, jobs: int) -> str:
    if ray is None:
        return f"jobs={jobs}"
    res = ray.cluster_resources()
    return (f"ray ({'local' if not args.ray else args.ray}: {res.get('CPU', 0):g} CPUs, "
            f"{res.get('GPU', 0):g} GPUs)")


def _compute(args, tasks, cached, cache_path, ray, jobs, failures):
    """Run the tasks (slow codec first, gsi profiles joined), append each finished row to
    the cache and to `cached`, failed ones to `failures`; None when interrupted."""
    from tqdm import tqdm
    # Slow codec (gsi) first so parallel workers finish together.
    tasks.sort(key=lambda t: (t["codec"] not in GSI_CODECS, t["image"]))
    n_rows = len(tasks)
    tasks = joint_tasks(tasks)
    if len(tasks) < n_rows:
        _log(f"gsi profiles share one free fit per image and point: {n_rows} encodes in "
             f"{len(tasks)} tasks")
    bar = tqdm(total=n_rows, desc="bench", unit="enc", disable=args.no_progress,
               dynamic_ncols=True, file=sys.stderr)
    with open(cache_path, "a") as fh:
        def take(rows):
            for row in rows if isinstance(rows, list) else [rows]:
                _take_row(row, fh, cached, failures, bar)

        try:
            if ray is not None:
                run_ray(ray, tasks, take)
            elif jobs == 1:
                run_serial(tasks, take)
            else:
                run_pool(tasks, take, jobs)
        except KeyboardInterrupt:
            bar.close()
            print(f"\ninterrupted; {len(cached)} results kept in {cache_path}; run again to "
                  f"resume", file=sys.stderr)
            return None
    bar.close()
    return failures


def _take_row(row, fh, cached, failures, bar) -> None:
    """One finished row: cached, or (an error, or another gscodec on the worker) failed."""
    want = row.get("settings", {}).get("encoder")
    if "error" not in row and want and row.get("worker_encoder") not in (None, want):
        row["error"] = (f"the worker ran another gscodec (encoder "
                        f"{row['worker_encoder']}, this checkout {want}); install "
                        f"this version on the workers")
    if "error" in row:
        failures.append(row)
        bar.write(f"FAILED {row['codec']} {row['image']} {row['point_name']}="
                  f"{row['point']}: {row['error']}")
    else:
        row.pop("worker_encoder", None)
        append_row(fh, row)
        cached[row["key"]] = row
    bar.set_postfix_str(f"{row['codec']} {row['image']}", refresh=False)
    bar.update(1)


def _run_meta(args, dataset, out, name, images, ray, jobs, skipped) -> dict:
    """The "meta" every results file of the run carries."""
    return {
        "source": "gscodec benchmark (gsi bench)",
        "type": "image",
        "dataset": name,
        "images": [p.name for p in images],
        **git_state(),
        "encoder_fingerprint": encoder_fingerprint(),
        "command": command_line(args, dataset, out),
        "executor": ("ray" if args.ray == "" else f"ray at {args.ray}") if ray is not None
        else f"processes (jobs={jobs})",
        "machine": machine_info(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "psnr_convention": "mean over images of per-image PSNR on 8-bit RGB (CompressAI)",
        "timing": "seconds per image, wall clock; peers single-threaded",
        "skipped_codecs": dict(skipped),
    }


def _write_report(args, out, name, images, kodak, codecs, cached, base_meta, skipped,
                  failures) -> None:
    """<codec>.json, summary.txt, bdrate.json and rd.png in `out`."""
    effort = getattr(args, "effort", "default")
    measured, tables, all_notes = {}, [], []
    for codec in codecs:
        res, per_image, notes = aggregate(codec, images, cached, codec.settings())
        all_notes.extend(notes)
        meta = dict(base_meta, codec=codec.name, settings=codec.settings())
        if codec.name in GSI_CODECS:
            meta.update(effort=effort, **iterations_meta(effort, args.iterations),
                        seed=args.seed, device=args.device)
        else:
            meta.update(effort=None, iterations=None)
        doc = results_json(codec, res, per_image, meta)
        with open(out / f"{codec.name}.json", "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        measured[codec.name] = doc
        tables.append(format_codec_table(codec, res))
    earlier, notes = load_folder_results(out, base_meta["images"], set(measured))
    all_notes.extend(notes)
    for cname, doc in earlier.items():
        # the summary shows every codec the BD-rates use, with the commit that measured it
        commit = str((doc.get("meta") or {}).get("git_commit") or "unknown")[:7]
        try:
            tables.append(format_codec_table(make_codec(cname), doc["results"])
                          + f"\n  (earlier run: {cname}.json, commit {commit})")
        except (KeyError, IndexError, TypeError, ValueError):
            all_notes.append(f"{cname}.json (earlier run): no table, its results lack a field")
    for_bd = {**measured, **earlier}

    anchors_dir = Path(args.anchors_dir) if args.anchors_dir else (default_anchors_dir()
                                                                  if kodak else None)
    published = load_anchors(anchors_dir) if (kodak or args.anchors_dir) else []
    bd_text, bd_records = bd_table(for_bd, published)
    if published and kodak and len(images) < 24:
        all_notes.append(f"published anchors are averages over all 24 Kodak images; this run "
                         f"used {len(images)}")
    if earlier:
        all_notes.append(f"BD-rates and the plot also use the earlier results in this folder: "
                         f"{', '.join(f'{n}.json' for n in earlier)}")
    report = _summary(name, images, tables, bd_text, skipped, all_notes, failures)
    _log(report)
    with open(out / "summary.txt", "w") as f:
        f.write(report + "\n")
    with open(out / "bdrate.json", "w") as f:
        json.dump(jsonable({
            "dataset": name, "images": base_meta["images"], "git_commit": base_meta["git_commit"],
            "encoder_fingerprint": base_meta["encoder_fingerprint"],
            "codecs": {n: f"{n}.json" for n in for_bd},
            "anchors_dir": rel_path(str(anchors_dir)) if (published and anchors_dir) else None,
            "rule": {"min_overlap": _bd.MIN_OVERLAP,
                     "min_points_in_overlap": _bd.MIN_POINTS_IN_OVERLAP,
                     "method": _bd.METHOD, "ms-ssim": "converted to dB, -10 log10(1 - MS-SSIM)",
                     "sign": "negative = test needs fewer bits for the same quality"},
            "pairs": bd_records}), f, indent=2)
        f.write("\n")
    if not args.no_plot:
        _plot(out, name, images, for_bd, published if args.anchors else [])


def _summary(name, images, tables, bd_text, skipped, notes, failures) -> str:
    text = [f"Rate-distortion on {name} ({len(images)} images)", ""]
    text += [t + "\n" for t in tables]
    if bd_text:
        text += [bd_text, ""]
    if skipped:
        text += ["skipped codecs:"] + [f"  {n}: {why}" for n, why in skipped] + [""]
    if notes:
        text += ["notes:"] + [f"  {n}" for n in dict.fromkeys(notes)] + [""]
    if failures:
        text += [f"{len(failures)} encodes FAILED (not cached; re-run to retry):"]
        text += [f"  {r['codec']} {r['image']} {r['point_name']}={r['point']}: {r['error']}"
                 for r in failures[:20]] + [""]
    return "\n".join(text)


def _plot(out, name, images, for_bd, shown_anchors) -> None:
    from .plot import plot_rd_panels
    from .tasks import json_number
    xmax = max((max(json_number(v) for v in d["results"]["bpp"]) for d in for_bd.values()
                if d["results"].get("bpp")), default=None)
    try:
        p = plot_rd_panels(out / "rd.png", list(for_bd.values()), shown_anchors,
                           title=f"{name}: {len(images)} images",
                           max_bpp=xmax if shown_anchors else None)
        if p:
            _log(f"wrote {p}")
    except Exception as e:  # plotting must not lose the measurements
        _log(f"plot rd.png failed: {e}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsi bench", description=BENCH_DESCRIPTION)
    return add_arguments(p)

def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
