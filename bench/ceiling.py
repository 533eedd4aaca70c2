#!/usr/bin/env python3
"""How many of a set's detectable faults any judge could catch from what the scenarios hold.

  ceiling.py DIR [DIR ...] [--nats 5,7] [--json] [--cmd 'BIN backtest {csv} --meta {meta} --json']

score.py counts a fault as detectable when `oracle_delay` is at most 300 s: the time a
sequential test that knew both releases' true distributions would need. A judge knows
neither. It learns the baseline from the scenario's own requests (the history before the
deploy; a canary's baseline also serves beside the candidate) and must hold the candidate
against the baseline plus the tolerance (+0.3 point of errors, a x1.08 p95), since a good
release may sit anywhere inside it. For each detectable fault this asks whether such a
two-sample test could reach NATS of evidence at all, with everything in its favour: no
environment, episodes or warm-up to be robust to, a look every minute with no price for
looking, and for latency the true shapes (a lognormal with a slow share) known. It is a
bound from above: a judge that must decide along the way, anytime-valid, and survive the
environment needs more evidence than this (about 7 nats where a one-off test needs 5).
With --cmd (as score.py's), each class also shows how many the judge caught.

- Error faults: the likelihood ratio of the scenario's own counts (baseline: all its
  requests, a rare transient episode included; candidate: its requests from the onset,
  likewise) against the nearest rates within
  tolerance, maximised over both (a generalized likelihood ratio), at the best of the
  looks; counted caught if it reaches NATS.
- Latency faults: the expected evidence of the same comparison from the true bucket
  distributions: n_eff * KL(the candidate's buckets || the tolerated ones), n_eff being
  1 / (1/candidate + 1/baseline) requests; counted with the chance that a normal statistic
  of that mean reaches sqrt(2 NATS).
"""
import argparse, functools, json, math, os, sys
from concurrent.futures import ThreadPoolExecutor
from statistics import NormalDist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scenarios"))
import gen_scenarios as gen  # noqa: E402  (the generator's own latency model)
import score  # noqa: E402

ERRORS_TOLERATED = 0.003
RATIO_TOLERATED = 1.08
LOOK_EVERY = 60
LATENCY_FAMILIES = ("latency_shift", "latency_ramp", "tail")


def log_likelihood(errors, requests, rate):
    rate = min(max(rate, 1e-12), 1 - 1e-12)
    return errors * math.log(rate) + (requests - errors) * math.log(1 - rate)


def errors_evidence(base_errors, base_requests, errors, requests):
    """ln of the generalized likelihood ratio "any rates" against "the candidate's rate at
    most the baseline's plus the tolerance" (the null's best fit lies on its edge)."""
    if not base_requests or not requests:
        return 0.0
    base_rate, rate = base_errors / base_requests, errors / requests
    if rate - base_rate <= ERRORS_TOLERATED:
        return 0.0
    best = log_likelihood(base_errors, base_requests, base_rate) \
        + log_likelihood(errors, requests, rate)
    null = lambda p: log_likelihood(base_errors, base_requests, p) \
        + log_likelihood(errors, requests, p + ERRORS_TOLERATED)
    # The null's log-likelihood is concave in the baseline's rate: a golden-section search.
    lo, hi = 0.0, 1.0 - ERRORS_TOLERATED
    for _ in range(100):
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, b) if null(a) > null(b) else (a, hi)
    return best - null((lo + hi) / 2)


@functools.lru_cache(maxsize=None)  # read once, whatever the levels asked
def counts(csv_path, onset):
    """Running (baseline errors, baseline requests, candidate errors, candidate requests)
    from the first step and the onset, at each look."""
    looks, totals, next_look = [], [0, 0, 0, 0], onset + LOOK_EVERY
    with open(csv_path) as f:
        next(f)
        for line in f:
            t, version, requests, errors = line.split(",", 4)[:4]
            t, requests, errors = int(t), int(requests), int(errors)
            if t >= next_look:
                looks.append(tuple(totals))
                next_look = t + LOOK_EVERY
            if version == "baseline":
                totals[0] += errors; totals[1] += requests
            elif t >= onset:
                totals[2] += errors; totals[3] += requests
    return looks + [tuple(totals)]


def latency_shares(truth, ratio, slow_share):
    cdf = gen.bucket_cdf(truth["median_ms"] * ratio, truth["sigma"], slow_share,
                         truth.get("slow_factor", 1.0))
    return [b - a for a, b in zip([0.0] + cdf, cdf + [1.0])]


def latency_divergence(truth):
    """KL of the faulty release's buckets from the nearest tolerated ones of its kind: the
    baseline scaled by the tolerated ratio, or the same slow path at the share that gives
    the tolerated p95."""
    if truth["family"] == "tail":
        share, factor, sigma = truth["slow_share"], truth["slow_factor"], truth["sigma"]
        lo, hi = 0.0, share
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if gen.p95_ratio(sigma, mid, factor) < RATIO_TOLERATED else (lo, mid)
        bad, tolerated = latency_shares(truth, 1.0, share), latency_shares(truth, 1.0, lo)
    else:
        bad = latency_shares(truth, truth["p95_ratio"], 0.0)
        tolerated = latency_shares(truth, RATIO_TOLERATED, 0.0)
    return sum(p * math.log(p / max(q, 1e-12)) for p, q in zip(bad, tolerated) if p > 1e-12)


def catch_chance(csv_path, truth, nats):
    """The chance (0 or 1 for error faults) that the generous test above catches the fault."""
    looks = counts(csv_path, truth["onset"])
    if truth["family"] in LATENCY_FAMILIES:
        _, base_requests, _, requests = looks[-1]
        if not base_requests or not requests:
            return 0.0
        n_eff = 1 / (1 / requests + 1 / base_requests)
        mean = math.sqrt(2 * n_eff * latency_divergence(truth))
        return NormalDist().cdf(mean - math.sqrt(2 * nats))
    return float(max(errors_evidence(*look) for look in looks) >= nats)


def detectable(truth):
    return truth["expect"] == "rollback" and truth.get("oracle_delay") is not None \
        and truth["oracle_delay"] <= score.DETECTABLE_S


def caught(labels, results):
    """Names of the faults caught as score.py counts them (at or after the onset, or a
    ramp's gray_from)."""
    return {name for name, truth in labels.items() if truth["expect"] == "rollback"
            and (results.get(name) or {}).get("verdict") == "rollback"
            and (results[name].get("decided_at") or 0) >= truth.get("gray_from", truth["onset"])}


def entries(directories):
    """(name prefixed by its set, csv path, truth) of every scenario of `directories`."""
    return [(f"{os.path.basename(d)}/{name}", os.path.join(d, name + ".csv"), truth)
            for d in directories for name, truth in score.load_labels(d).items()]


def judged(template, entries):
    """The judge's result for each entry, by score.py's own runner."""
    def one(entry):
        name, csv_path, _ = entry
        return name, score.run_cmd(template, csv_path, csv_path[:-4] + ".json", 60)[0]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return dict(pool.map(one, entries))


def bound(entries, nats, caught=None):
    """Per (family, mode): [detectable faults, how many the bound allows, how many of them
    are in `caught`]. `entries`: (name, csv path, truth)."""
    classes = {}
    for name, csv_path, truth in entries:
        if not detectable(truth):
            continue
        row = classes.setdefault((truth["family"], truth["mode"]), [0, 0.0, 0])
        row[0] += 1
        row[1] += catch_chance(csv_path, truth, nats)
        row[2] += bool(caught and name in caught)
    return classes


def totals(classes):
    """The sums of `bound`'s rows over its classes."""
    return [sum(row[i] for row in classes.values()) for i in range(3)]


def table(entries, nats, caught=None):
    """Lines per family and mode: detectable faults, how many the bound allows, and (given
    `caught`, the names a judge caught) the judge's catches."""
    classes = bound(entries, nats, caught)
    total = totals(classes)
    lines = [f"  {family:28s} {mode:9s} {n:5d} detectable, bound {bound:7.1f}"
             + (f", judge {judge}" if caught is not None else "")
             for (family, mode), (n, bound, judge) in sorted(classes.items())]
    lines.append(f"  all: {total[0]} detectable, at most {total[1]:.1f} catchable at {nats:g} nats "
                 f"({100 * total[1] / max(total[0], 1):.1f} %)"
                 + (f", judge {total[2]} ({100 * total[2] / max(total[0], 1):.1f} %)"
                    if caught is not None else ""))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", help="scenario sets (bench/gen_scenarios.py's output)")
    ap.add_argument("--nats", default="5,7", help="evidence levels, comma-separated")
    ap.add_argument("--json", action="store_true", help="one JSON object per level")
    ap.add_argument("--cmd", help="a judge's command, as score.py's: its catches are shown too")
    a = ap.parse_args()
    scenarios = entries(a.dirs)
    judge = None
    if a.cmd:
        judge = caught({name: truth for name, _, truth in scenarios}, judged(a.cmd, scenarios))
    for nats in map(float, a.nats.split(",")):
        if not a.json:
            print(f"catchable at {nats:g} nats:")
            print("\n".join(table(scenarios, nats, judge)))
            continue
        classes = bound(scenarios, nats, judge)
        row = lambda n, c, j: {"detectable": n, "catchable": round(c, 1),
                               **({"judge": j} if judge is not None else {})}
        print(json.dumps({
            "nats": nats,
            **row(*totals(classes)),
            "classes": {f"{family}/{mode}": row(*r) for (family, mode), r in sorted(classes.items())}}))


if __name__ == "__main__":
    main()
