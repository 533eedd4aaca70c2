"""Unit tests of bench/ceiling.py's evidence (python3 -m unittest discover -s bench)."""
import math, os, sys, unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ceiling  # noqa: E402


class ErrorsEvidence(unittest.TestCase):
    def test_at_large_counts_it_is_the_normal_statistic_squared_over_two(self):
        # 3 % against 5 % over 10,000 requests each: z = (0.02 - 0.003) / 0.0028 = 6.06.
        z = (0.02 - 0.003) / math.sqrt(0.03 * 0.97 / 1e4 + 0.05 * 0.95 / 1e4)
        evidence = ceiling.errors_evidence(300, 10_000, 500, 10_000)
        self.assertAlmostEqual(evidence, z * z / 2, delta=0.05 * z * z / 2)

    def test_within_the_tolerance_there_is_none(self):
        self.assertEqual(ceiling.errors_evidence(30, 1000, 33, 1000), 0.0)
        self.assertEqual(ceiling.errors_evidence(0, 100, 0, 300), 0.0)
        # Worse than the baseline, but not beyond the tolerance by enough to tell.
        self.assertLess(ceiling.errors_evidence(0, 90, 1, 270), 1.0)

    def test_a_clean_baseline_allows_a_few_points_at_low_traffic(self):
        # The example: 27 failures in 256 requests against none in 114, clear.
        self.assertGreater(ceiling.errors_evidence(0, 114, 27, 256), 7.0)
        # 2 % against none in 90 (15 minutes at 0.3 req/s): the oracle needs 87 s, but
        # 0 of 90 still allows a few points, and 5 of 270 is no proof.
        self.assertLess(ceiling.errors_evidence(0, 90, 5, 270), 5.0)

    def test_more_evidence_for_a_larger_step(self):
        steps = [ceiling.errors_evidence(27, 900, e, 2700) for e in (100, 135, 200)]
        self.assertEqual(steps, sorted(steps))


class LatencyDivergence(unittest.TestCase):
    truth = {"median_ms": 120, "sigma": 0.7, "slow_share": 0.0, "slow_factor": 1.0}

    def test_nothing_at_the_tolerated_ratio_and_more_beyond_it(self):
        at = lambda ratio: ceiling.latency_divergence(
            {**self.truth, "family": "latency_shift", "p95_ratio": ratio})
        # scenarios/README's tolerance: a good release's p95 is under x1.08.
        self.assertAlmostEqual(at(1.08), 0.0, places=9)
        self.assertGreater(at(1.6), at(1.25))
        self.assertGreater(at(1.25), 0.0)

    def test_a_slow_path_is_held_against_the_same_path_at_the_tolerated_share(self):
        tail = lambda share: ceiling.latency_divergence(
            {**self.truth, "family": "tail", "slow_share": share, "slow_factor": 4.0})
        self.assertGreater(tail(0.08), tail(0.05))
        self.assertGreater(tail(0.05), 0.0)


if __name__ == "__main__":
    unittest.main()
