#!/usr/bin/env python3
"""Generate release scenarios in the format of shared/scenarios (see its README), with
labels, to judge the judge on far more cases than the public set holds.

  gen_scenarios.py OUT_DIR [--count N] [--seed S]

The generator follows the README's description, not its data: per-second Poisson traffic
that drifts slowly and comes in bursts; lognormal latencies; a shared environment factor
per 10 s block on error rate and latency; transient error episodes up to 15 s (before the
deploy too); a warm-up after the deploy; shared dependency outages; and the release
faults by family. Labels use the README's tolerances (bad: +1 point errors or p95 x1.25;
good: under +0.3 point and x1.08). `oracle_delay` is an estimate (the time a sequential
test knowing the true rates would need), good enough to sort out faults no judge could see.
"""
import argparse, json, math, os, random

BOUNDS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
COLUMNS = ["t", "version", "requests", "errors"] + [f"le_{b}" for b in BOUNDS] + ["le_inf"]
DURATION, DEPLOY = 1200, 300

FAMILIES = ["same", "bursty_same", "improvement", "low_traffic_noise", "warmup_blip",
            "shared_outage", "noisy_baseline_small_fault", "error_step", "error_ramp",
            "latency_shift", "latency_ramp", "tail", "outage", "delayed"]


def poisson(rng, lam):
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    l, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= l:
            return k
        k += 1


def binomial(rng, n, p):
    p = min(max(p, 0.0), 1.0)
    if n > 200:
        return min(n, max(0, int(round(rng.gauss(n * p, math.sqrt(n * p * (1 - p)) + 1e-9)))))
    return sum(1 for _ in range(n) if rng.random() < p)


def histogram(rng, n, median, sigma, ratio, tail_share, tail_factor):
    counts = [0] * (len(BOUNDS) + 1)
    for _ in range(n):
        latency = median * ratio * math.exp(rng.gauss(0, sigma))
        if tail_share and rng.random() < tail_share:
            latency *= tail_factor
        i = next((i for i, b in enumerate(BOUNDS) if latency <= b), len(BOUNDS))
        counts[i] += 1
    cumulative, total = [], 0
    for c in counts:
        total += c
        cumulative.append(total)
    return cumulative


def p95_ratio_of_tail(sigma, share, factor):
    """p95 of a lognormal(0, sigma) mixed with a slowed share, over the plain one's p95."""
    def cdf(x):
        z = lambda v: 0.5 * (1 + math.erf(math.log(v) / (sigma * math.sqrt(2))))
        return (1 - share) * z(x) + share * z(x / factor)
    lo, hi = 0.01, 1000.0
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cdf(mid) < 0.95 else (lo, mid)
    return lo / math.exp(1.645 * sigma)


def scenario(rng, family):
    rps = rng.choice([0.3, 1, 3, 10, 30, 100, 300])
    if family == "low_traffic_noise":
        rps = rng.choice([0.05, 0.1])
    mode = rng.choice(["bluegreen", "canary"])
    weight = rng.choice([0.05, 0.1, 0.2, 0.5])
    base_error = rng.choice([0.0, 0.001, 0.005, 0.01, 0.03])
    jitter = rng.choice([0.0, 0.1, 0.2, 0.3])
    latency_jitter = rng.choice([0.0, 0.05, 0.1])
    median = rng.choice([20, 40, 80, 200, 400, 800])
    sigma = rng.uniform(0.35, 0.6)
    expect, onset = "keep", None
    error_delta = lambda t: 0.0
    ratio = lambda t: 1.0
    tail = (0.0, 1.0)
    if family == "improvement":
        error_delta = lambda t: -base_error / 2
        ratio = lambda t: 0.8
    elif family == "noisy_baseline_small_fault":
        base_error = 0.03
        d = rng.choice([0.002, 0.02])
        error_delta = lambda t: d
        expect, onset = ("rollback", DEPLOY) if d >= 0.01 else ("keep", None)
    elif family == "error_step":
        d = rng.choice([0.007, 0.02, 0.05])
        error_delta = lambda t: d
        expect, onset = ("rollback", DEPLOY) if d >= 0.01 else ("either", None)
    elif family == "error_ramp":
        d = rng.choice([0.1, 0.3])
        error_delta = lambda t: d * (t - DEPLOY) / (DURATION - DEPLOY)
        expect, onset = "rollback", DEPLOY + math.ceil(0.01 / d * (DURATION - DEPLOY))
    elif family == "latency_shift":
        r = rng.choice([1.05, 1.6, 2.5])
        ratio = lambda t: r
        expect, onset = ("rollback", DEPLOY) if r >= 1.25 else ("keep", None)
    elif family == "latency_ramp":
        r = rng.choice([2.0, 4.0])
        ratio = lambda t: 1 + (r - 1) * (t - DEPLOY) / (DURATION - DEPLOY)
        expect, onset = "rollback", DEPLOY + math.ceil(0.25 / (r - 1) * (DURATION - DEPLOY))
    elif family == "tail":
        share, factor = rng.choice([(0.03, 4.0), (0.05, 3.0), (0.05, 5.0)])
        tail = (share, factor)
        expect, onset = ("rollback", DEPLOY) if p95_ratio_of_tail(sigma, share, factor) >= 1.25 else ("either", None)
    elif family == "outage":
        error_delta = lambda t: 1.0
        expect, onset = "rollback", DEPLOY
    elif family == "delayed":
        d = rng.choice([0.02, 0.1, 0.5])
        start = DEPLOY + rng.randint(60, 400)
        error_delta = lambda t: d if t >= start else 0.0
        expect, onset = "rollback", start
    # Environment: one factor per 10 s block, shared by every version.
    blocks = DURATION // 10 + 1
    error_env = [math.exp(rng.gauss(0, jitter)) for _ in range(blocks)]
    latency_env = [math.exp(rng.gauss(0, latency_jitter)) for _ in range(blocks)]
    # Transient error episodes, before the deploy too; some hit every version.
    episodes = []
    every = rng.choice([150, 300, 600])
    t = rng.expovariate(1 / every)
    while t < DURATION:
        # Up to 15 s in all, shoulders (2 s each side) included.
        length = rng.randint(1, 11)
        episodes.append((int(t) + 2, int(t) + 2 + length, rng.uniform(0.08, 0.3), rng.choice(["all", "baseline", "candidate"])))
        t += length + rng.expovariate(1 / every)
    warmup = rng.random() < 0.5 or family == "warmup_blip"
    warm_len = rng.randint(10, 40)
    warm_latency, warm_errors = rng.uniform(1.3, 3.0), rng.uniform(0.0, 0.05)
    outage = None
    if family == "shared_outage":
        start = DEPLOY + rng.randint(0, 300)
        outage = (start, start + rng.randint(60, 300), rng.uniform(0.1, 0.9))
        if mode == "bluegreen":
            expect = "either"
    bursts = set()
    for _ in range(rng.randint(0, 20) if family == "bursty_same" else rng.randint(0, 3)):
        s = rng.randint(0, DURATION - 5)
        bursts.update(range(s, s + rng.randint(1, 5)))
    rows = []
    for t in range(DURATION):
        rate = rps * (1 + 0.2 * math.sin(2 * math.pi * t / 900)) * (3 if t in bursts else 1)
        total = poisson(rng, rate)
        if t < DEPLOY:
            split = [("baseline", total)]
        elif mode == "bluegreen":
            split = [("candidate", total)]
        else:
            c = binomial(rng, total, weight)
            split = [("baseline", total - c), ("candidate", c)]
        for version, n in split:
            if n == 0:
                continue
            env = error_env[t // 10]
            p = base_error * env
            slower = latency_env[t // 10]
            share, factor = (0.0, 1.0)
            if version == "candidate":
                p = max(0.0, p + error_delta(t))
                slower *= ratio(t)
                share, factor = tail
                if warmup and t < DEPLOY + warm_len:
                    fade = 1 - (t - DEPLOY) / warm_len
                    slower *= 1 + (warm_latency - 1) * fade
                    p += warm_errors * fade
            for a, b, extra, who in episodes:
                if who in ("all", version):
                    # Episodes rise and fade over a few seconds (shoulders) around their core.
                    if a <= t < b:
                        p += extra
                    elif a - 2 <= t < a or b <= t < b + 2:
                        p += extra / 3
            if outage and outage[0] <= t < outage[1]:
                p += outage[2]
            errors = binomial(rng, n, min(p, 1.0))
            rows.append([t, version, n, errors] + histogram(rng, n, median, sigma, slower, share, factor))
    meta = {"mode": mode, "deploy_at": DEPLOY, "duration": DURATION, "step_seconds": 1}
    if mode == "canary":
        meta["canary_weight"] = weight
    # Rough oracle: seconds an SPRT (ln 1000) knowing the true error rates needs.
    oracle = None
    if expect == "rollback":
        served = rps * (weight if mode == "canary" else 1)
        if family in ("latency_shift", "latency_ramp", "tail"):
            oracle = 1 if served >= 0.5 else 400
        else:
            p0, p1 = base_error, min(base_error + max(error_delta(onset + 30), 0.01), 1.0)
            kl = p1 * math.log(max(p1, 1e-9) / max(p0, 1e-4)) + (1 - p1) * math.log((1 - p1 + 1e-9) / (1 - p0))
            oracle = math.log(1000) / max(served * kl, 1e-9)
    label = {"expect": expect, "onset": onset, "oracle_delay": oracle, "family": family, "rps": rps,
             "mode": mode, "base_error": base_error, "jitter": jitter, "warmup": warmup}
    return rows, meta, label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=4, help="scenarios per family")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    labels = {}
    for family in FAMILIES:
        for i in range(a.count):
            name = f"{family}-{i:03d}"
            rows, meta, label = scenario(rng, family)
            meta["name"] = name
            with open(os.path.join(a.out, name + ".csv"), "w") as f:
                f.write(",".join(COLUMNS) + "\n")
                for row in rows:
                    f.write(",".join(str(x) for x in row) + "\n")
            with open(os.path.join(a.out, name + ".json"), "w") as f:
                json.dump(meta, f)
            labels[name] = label
    with open(os.path.join(a.out, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1)


if __name__ == "__main__":
    main()
