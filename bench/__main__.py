"""The benchmark: ``python -m bench run [--quick|--smoke]``, ``median``, ``profile``, ``mock``."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmark (full unless --quick or --smoke)")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="a few minutes: short steps, 60 s soak")
    size.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="seconds: checks the harness works, numbers mean little")
    run.add_argument("--soak-seconds", type=float, default=None,
                     help="soak length (full: 600, quick: 60; 0 skips it)")
    run.add_argument("--no-nginx", action="store_true", help="skip the nginx reference rows")
    run.add_argument("--no-backends", action="store_true",
                     help="skip the PostgreSQL + Redis runs")
    run.add_argument("--only", default=None,
                     help="comma-separated scenarios: selfcheck,sequential,throughput,fixed,"
                          "anthropic,streaming,open,soak,backends")
    run.add_argument("--out", type=Path, default=None, help="results directory")
    run.add_argument("--keep-work", action="store_true", help="keep logs and data dirs")
    run.add_argument("--variant", default=None,
                     help="experiment: comma-separated bench.variants changes "
                          "(httpcore)")
    med = sub.add_parser("median", help="the median of several result JSONs, as Markdown")
    med.add_argument("files", nargs="+", type=Path, help="result JSONs of one mode and variant")
    med.add_argument("--out", type=Path, default=None,
                     help="Markdown file or directory (default: bench/results)")
    prof = sub.add_parser("profile", help="py-spy the gateway under non-streaming or SSE load")
    prof.add_argument("kind", choices=["nonstream", "stream"])
    prof.add_argument("--seconds", type=float, default=20)
    prof.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    prof.add_argument("--conns", type=int, default=64)
    prof.add_argument("--out", type=Path, default=None)
    prof.add_argument("--variant", default=None, help="as for run")
    prof.add_argument("--profiler", choices=["py-spy", "pyinstrument"], default="py-spy")
    mock = sub.add_parser("mock", help="run the mock upstream alone")
    mock.add_argument("--port", type=int, default=9100)
    args = parser.parse_args(argv)

    if args.command == "run":
        from bench import runner

        only = set(args.only.split(",")) if args.only else set(runner.SCENARIOS)
        if args.no_backends:
            only.discard("backends")
        if args.mode == "smoke" and args.only is None:
            only.discard("backends")  # PostgreSQL start-up alone would eat the budget
        runner.run(args.mode or "full", soak_seconds=args.soak_seconds,
                   use_nginx=not args.no_nginx, only=only, out_dir=args.out or runner.RESULTS,
                   keep_work=args.keep_work, variant=args.variant)
    elif args.command == "median":
        from bench import median

        try:
            median.run(args.files, out=args.out)
        except median.MedianError as exc:
            parser.error(str(exc))
    elif args.command == "profile":
        from bench import profile

        profile.run(args.kind, seconds=args.seconds, rate=args.rate, conns=args.conns,
                    out_dir=args.out, variant=args.variant, profiler=args.profiler)
    else:
        from bench import mock_upstream

        mock_upstream.main(["--port", str(args.port)])


if __name__ == "__main__":
    main()
