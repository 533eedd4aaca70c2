//! What prometheus-client (the encoder rearguard's demo app and many services use) writes,
//! the parser reads back: every label value, however odd, and every count.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use proptest::prelude::*;

type Labels = Vec<(String, String)>;

proptest! {
    #[test]
    fn what_prometheus_client_writes_is_read_back(
        series in proptest::collection::btree_map("\\PC{0,12}", 0u64..1_000_000, 1..6),
        observations in proptest::collection::vec(0.0f64..20.0, 0..50),
    ) {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "Requests", requests.clone());
        let latency = Histogram::new([0.005, 0.05, 0.5, 5.0]);
        registry.register("latency_seconds", "Latency", latency.clone());
        for (path, count) in &series {
            requests
                .get_or_create(&vec![("path".to_string(), path.clone()), ("code".to_string(), "200".to_string())])
                .inc_by(*count);
        }
        for seconds in &observations {
            latency.observe(*seconds);
        }
        let mut page = String::new();
        encode(&mut page, &registry).unwrap();

        let samples = rearguard_exposition::parse(&page).unwrap();
        let read: std::collections::BTreeMap<String, u64> = samples
            .iter()
            .filter(|s| s.name == "http_requests_total")
            .map(|s| (s.label("path").unwrap().to_string(), s.value as u64))
            .collect();
        prop_assert_eq!(&read, &series);
        let infinite = samples
            .iter()
            .find(|s| s.name == "latency_seconds_bucket" && s.label("le") == Some("+Inf"))
            .unwrap();
        prop_assert_eq!(infinite.value as usize, observations.len());
    }

    #[test]
    fn any_text_is_parsed_or_refused_without_a_panic(page in "\\PC{0,200}") {
        let _ = rearguard_exposition::parse(&page);
    }
}
