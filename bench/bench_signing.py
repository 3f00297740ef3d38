"""What signing costs per page: `digitize process` on the same pages unsigned and signed, runs interleaved.

Every page is its own input, so every page is a one-page dossier and gets its own signature:
the worst case (real dossiers have several pages per signature). Prints wall time per page
for both, their ratio, and the seconds the manifests record for signing against the total,
which does not depend on how busy the machine was. Usage: bench_signing.py [--rounds 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import pageset  # noqa: E402
from bench.measure import run_all  # noqa: E402
from digitize.keys import make_demo_ca  # noqa: E402

BIN = Path(sys.executable).parent
TARGET = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="unsigned/signed pairs, run alternately")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="digitize-bench-signing-"))
    pages = pageset.make(work / "pages")
    ca = make_demo_ca(work / "ca", agency="Bench agency")
    signing = ["--set", f"signing.pkcs12={ca.agency_pkcs12}"]
    env = {**os.environ, "DIGITIZE_SIGNING_PASSPHRASE": ca.passphrase}
    print(f"{len(pages)} pages, each its own dossier, {args.jobs} at a time, {args.rounds} rounds\n")

    walls: dict[str, list[float]] = {"unsigned": [], "signed": []}
    sign_share = []
    for round_ in range(args.rounds):
        for variant in ("unsigned", "signed"):
            out = work / f"{variant}-{round_}"
            argv = [str(BIN / "digitize"), "process", *map(str, pages), "--out", str(out), "--jobs", str(args.jobs)]
            run = run_all([argv + (signing if variant == "signed" else [])], jobs=1, env=env)
            walls[variant].append(run.seconds / len(pages))
            manifests = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
            manifests += [json.loads((d / f"{d.name}.json").read_text()) for d in (out / "manual").iterdir()]
            if variant == "signed":
                assert all(m["signature"] for m in manifests), "every record must be signed"
                signing_s = sum(m["timings_s"]["sign"] for m in manifests)
                sign_share.append(signing_s / run.seconds)
            print(f"  round {round_ + 1} {variant:>8}: {run.seconds:6.1f} s wall, {run.seconds / len(pages):.3f} s/page")

    unsigned, signed = statistics.median(walls["unsigned"]), statistics.median(walls["signed"])
    extra = signed / unsigned - 1
    print(f"\nwall time per page, median: unsigned {unsigned:.3f} s, signed {signed:.3f} s -> signing adds {extra:+.1%}")
    share = statistics.median(sign_share)
    print(f"signing time recorded in the manifests: {share:.1%} of the signed runs' wall time")
    print(f"target: signing adds <= {TARGET:.0%} per page -> {'met' if max(extra, share) <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
