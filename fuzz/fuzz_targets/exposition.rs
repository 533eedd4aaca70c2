//! Any text: the parser returns samples or an error, never panics; and when it accepts a
//! page, it read one sample from each line that is not blank or a comment.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(page) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(samples) = rearguard_exposition::parse(page) {
        let sample_lines = page
            .lines()
            .filter(|line| {
                let line = line.trim_start_matches([' ', '\t']);
                !line.is_empty() && !line.starts_with('#')
            })
            .count();
        assert_eq!(sample_lines, samples.len());
        assert!(samples.iter().all(|sample| !sample.name.is_empty()));
    }
});
