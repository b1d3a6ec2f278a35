//! Replays every input saved under tests/fuzz/regressions/<target>/ through its fuzz entry point.

use std::path::Path;

/// A fuzz target's entry point.
type Target = fn(&[u8]);

#[test]
fn saved_fuzz_inputs_do_not_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let targets: [(&str, Target); 7] = [
        ("mime_view", strainer::fuzz::mime_view),
        ("smtp_command", strainer::fuzz::smtp_command),
        ("data_decoder", strainer::fuzz::data_decoder),
        ("rules_table", strainer::fuzz::rules_table),
        ("banned_rules", strainer::fuzz::banned_rules),
        ("config", strainer::fuzz::config),
        ("bayes_tokens", strainer::fuzz::bayes_tokens),
    ];
    let mut replayed = 0;
    for (name, run) in targets {
        for entry in std::fs::read_dir(root.join(name)).unwrap().flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            run(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the regression folders hold the inputs that once crashed");
}
