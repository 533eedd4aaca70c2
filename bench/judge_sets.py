#!/usr/bin/env python3
"""Score the judge on generated scenario sets, pooled, optionally beside a peer binary.

  bench/judge_sets.py [--bin BIN] [--peer BIN] [--seeds 11-16,41-46]
                      [--keep-seeds 21-24] [--stress-seeds 31-38] [--miss-seeds 61-62]
                      [--draws 23] [--show-misses] [--ceiling 5,7]

Each standard seed is one set from bench/gen_scenarios.py (25 scenarios per family); each
keep seed is a set of 75 per good-release family (what a false rollback would come from);
each stress seed is like a keep seed with a transient episode every 100 s on average;
each miss seed is 40 scenarios of each class unseen sets showed the judge missing
(gen_scenarios.py's MISS_FAMILIES), scored class by class.
Scenarios are judged with `BIN backtest CSV --meta META --json` through the official
scorer's functions (scenarios/score.py), and the results are pooled: false
rollbacks, premature rollbacks, detectable faults caught, and the median delay after onset.
With --draws N, it also shows how the median delay of a set with only N detectable faults
(the public set has 23) varies from draw to draw of the standard sets' faults. With
--ceiling, it shows beside the judge's catches, class by class, how many of the standard
sets' faults any judge could catch at those levels of evidence (bench/ceiling.py).
"""
import argparse, os, random, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "..", "scenarios")
sys.path.insert(0, SCENARIOS)
import score  # noqa: E402  (the official scorer, beside the public scenarios)
import ceiling  # noqa: E402

MISS_FAMILIES = ("polluted_history", "low_traffic_clear", "thin_history")
KEEP_FAMILIES = ("same,bursty_same,improvement,low_traffic_noise,warmup_blip,shared_outage,"
                 "noisy_baseline_small_fault,latency_shift")


def seeds(text):
    """'11-16,41-46' -> [11, ..., 16, 41, ..., 46]."""
    out = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def generate(out, seed, *extra):
    subprocess.run([sys.executable, os.path.join(HERE, "gen_scenarios.py"), out,
                    "--seed", str(seed), *extra], check=True)


def pooled(binary, directories):
    """All sets scored as one by score.py's own scorer (names prefixed by their set)."""
    entries = ceiling.entries(directories)
    labels = {name: truth for name, _, truth in entries}
    results = ceiling.judged(f"{binary} backtest {{csv}} --meta {{meta}} --json", entries)
    s, rows = score.score(results, labels)
    falses = [row.split()[2] for row in rows if row.startswith("FALSE ROLLBACK")]
    summary = (f"false rollbacks {s['false_rollbacks']}/{s['keep']}, premature {s['premature']}, "
               f"caught {s['detected']}/{s['detectable']}, median delay {s['median_delay_s']} s"
               + (f"; false: {', '.join(falses)}" if falses else ""))
    return summary, labels, results


def misses(labels, results):
    """One line per detectable fault not caught (or caught before it was worse than
    tolerated: its onset, or a ramp's gray_from, as score.py counts), with the parameters it
    was drawn with, so a class of misses shows itself."""
    lines, hits = [], ceiling.caught(labels, results)
    for name, truth in sorted(labels.items()):
        if not ceiling.detectable(truth) or name in hits:
            continue
        keys = ("mode", "canary_weight", "rps", "error_delta", "baseline_error_rate", "jitter", "p95_ratio", "oracle_delay")
        lines.append(f"  missed {name}: " + ", ".join(f"{k} {truth.get(k)}" for k in keys))
    return lines


def median_over_draws(labels, results, faults, draws=2000, target=45):
    """Spread of the median delay over sets of `faults` detectable faults drawn at random
    (each scored by score.py, so misses are left out of the median as it leaves them)."""
    detectable = [name for name, truth in labels.items() if ceiling.detectable(truth)]
    rng = random.Random(1)
    medians = []
    for _ in range(draws):
        names = rng.sample(detectable, faults)
        s, _ = score.score({n: results[n] for n in names}, {n: labels[n] for n in names})
        if s["median_delay_s"] is not None:
            medians.append(s["median_delay_s"])
    medians.sort()
    at = lambda q: medians[int(q * (len(medians) - 1))]
    within = sum(m <= target for m in medians) / len(medians)
    return (f"median delay of {faults} faults drawn at random ({draws} draws): 10th percentile "
            f"{at(0.1)} s, median {at(0.5)} s, 90th {at(0.9)} s; at most {target} s in "
            f"{100 * within:.0f} % of draws")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/rearguard-target"))
    ap.add_argument("--bin", default=os.path.join(target, "release", "rearguard"))
    ap.add_argument("--peer", help="a second rearguard binary judged on the same sets")
    ap.add_argument("--seeds", default="11-16")
    ap.add_argument("--keep-seeds", default="21-24")
    ap.add_argument("--stress-seeds", default="")
    ap.add_argument("--miss-seeds", default="")
    ap.add_argument("--draws", type=int, help="faults per draw for the median's spread")
    ap.add_argument("--show-misses", action="store_true",
                    help="list the judge's missed detectable faults with their parameters")
    ap.add_argument("--ceiling", help="evidence levels (nats, comma-separated) at which to show "
                    "how many standard faults any judge could catch (bench/ceiling.py)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        groups = {"standard": [], "keep": [], "stress": []}
        for family in MISS_FAMILIES:
            groups[family] = []
            for seed in seeds(a.miss_seeds):
                groups[family].append(os.path.join(work, f"m{seed}-{family}"))
                generate(groups[family][-1], seed, "--count", "40", "--families", family)
        for seed in seeds(a.seeds):
            groups["standard"].append(os.path.join(work, f"g{seed}"))
            generate(groups["standard"][-1], seed, "--count", "25")
        for seed in seeds(a.keep_seeds):
            groups["keep"].append(os.path.join(work, f"k{seed}"))
            generate(groups["keep"][-1], seed, "--count", "75", "--families", KEEP_FAMILIES)
        for seed in seeds(a.stress_seeds):
            groups["stress"].append(os.path.join(work, f"s{seed}"))
            generate(groups["stress"][-1], seed, "--count", "60", "--families", KEEP_FAMILIES,
                     "--episode-every", "100")
        for group, directories in groups.items():
            if not directories:
                continue
            for label, binary in (("judge", a.bin), ("peer", a.peer)):
                if binary:
                    summary, labels, results = pooled(binary, directories)
                    print(f"{group} ({len(directories)} sets) {label}: {summary}", flush=True)
                    if a.show_misses and label == "judge":
                        print("\n".join(misses(labels, results)), flush=True)
                    if a.draws and group == "standard":
                        print(f"  {median_over_draws(labels, results, a.draws)}", flush=True)
                    if a.ceiling and group == "standard" and label == "judge":
                        entries = ceiling.entries(directories)
                        for nats in a.ceiling.split(","):
                            print(f"  catchable at {nats} nats, beside the judge's catches:")
                            print("\n".join(ceiling.table(entries, float(nats),
                                                          ceiling.caught(labels, results))), flush=True)


if __name__ == "__main__":
    main()
