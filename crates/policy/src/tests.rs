use super::*;
use proptest::prelude::*;

fn f(name: &str) -> Finding {
    Finding::new(name, "detail")
}

fn scored(s: f64) -> Finding {
    let mut x = Finding::new("RULE_SCORE", "r");
    x.score = Some(s);
    x
}

#[test]
fn thresholds_at_their_boundaries() {
    let c = Config::default();
    assert_eq!(c.decide(&[scored(4.9)], None).category, Category::Clean);
    let v = c.decide(&[scored(5.0)], None);
    assert_eq!((v.category, v.action), (Category::Spam, Action::Tag));
    assert!(v.headers.contains(&"X-Spam-Flag: YES\r\n".to_string()));
    assert_eq!(c.decide(&[scored(14.9)], None).action, Action::Tag);
    assert_eq!(c.decide(&[scored(15.0)], None).action, Action::Quarantine);
    let r = Config { reject: 20.0, ..Config::default() };
    assert_eq!(r.decide(&[scored(20.0)], None).action, Action::Reject);
    assert_eq!(r.decide(&[scored(19.9)], None).action, Action::Quarantine);
}

#[test]
fn each_category_takes_its_action() {
    let c = Config::default();
    assert_eq!(c.decide(&[f("CLAMAV_VIRUS"), f("BANNED_EXT")], None).category, Category::Virus);
    assert_eq!(c.decide(&[f("BANNED_EXT")], None).action, Action::Quarantine);
    assert_eq!(c.decide(&[f("MIME_AMBIGUOUS")], None).action, Action::Quarantine);
    let u = c.decide(&[f("MIME_UNCLOSED_BOUNDARY")], None);
    assert_eq!((u.category, u.action), (Category::Unchecked, Action::Tag));
    assert!(u.headers.contains(&"X-Strainer-Unchecked: MIME_UNCLOSED_BOUNDARY\r\n".to_string()));
    assert_eq!(c.decide(&[], Some((&RuleOutcome::Reject("no".into()), "r:1"))).action, Action::Reject);
    assert_eq!(c.decide(&[], Some((&RuleOutcome::Discard, "r:1"))).action, Action::Discard);
    assert_eq!(c.decide(&[], Some((&RuleOutcome::Hold, "r:1"))).action, Action::Quarantine);
    assert_eq!(
        c.decide(&[f("BANNED_EXT")], Some((&RuleOutcome::Discard, "r"))).category,
        Category::Banned,
        "banned before rules"
    );
    for (cat, action) in [("virus", Action::Reject), ("banned", Action::Discard), ("unchecked", Action::Deliver)] {
        let mut c = Config::default();
        match cat {
            "virus" => c.actions.virus = action,
            "banned" => c.actions.banned = action,
            _ => c.actions.unchecked = action,
        }
        let finding = match cat {
            "virus" => "CLAMAV_VIRUS",
            "banned" => "BANNED_EXT",
            _ => "ARCHIVE_BOMB",
        };
        assert_eq!(c.decide(&[f(finding)], None).action, action, "{cat}");
    }
}

#[test]
fn warn_mode_delivers_and_says_what_it_would_do() {
    let c = Config { warn: true, ..Config::default() };
    let v = c.decide(&[f("CLAMAV_VIRUS")], None);
    assert_eq!((v.action, v.warned), (Action::Tag, Some(Action::Quarantine)));
    assert!(v.headers.contains(&"X-Strainer-Warn: would quarantine (VIRUS)\r\n".to_string()));
    let c = Config { warn_categories: vec!["banned".into()], ..Config::default() };
    assert_eq!(c.decide(&[f("BANNED_EXT")], None).action, Action::Tag);
    assert_eq!(c.decide(&[f("CLAMAV_VIRUS")], None).action, Action::Quarantine, "only the named category warns");
}

#[test]
fn headers_use_our_vocabulary() {
    let mut x = Finding::new("RULE_SCORE", "evil\r\nX-Spam-Flag: NO");
    x.score = Some(6.25);
    let v = Config::default().decide(&[x, f("BANNED_EXT")], None);
    let all = v.headers.concat();
    assert!(!all.contains("evil"), "{all}");
    assert_eq!(all.matches("\r\n").count(), v.headers.len(), "one line each");
    assert!(all.contains("X-Spam-Score: 6.2\r\n") || all.contains("X-Spam-Score: 6.3\r\n"), "{all}");
    assert!(all.contains("X-Spam-Level: ******\r\n"), "{all}");
    assert!(all.contains("tests=[RULE_SCORE,BANNED_EXT]"), "{all}");
}

#[test]
fn the_scores_table_adds_per_finding() {
    let mut c = Config::default();
    c.scores.insert("MIME_UNCLOSED_BOUNDARY".into(), 5.5);
    c.actions.unchecked = Action::Deliver;
    let v = c.decide(&[f("MIME_UNCLOSED_BOUNDARY")], None);
    assert_eq!(v.score, 5.5);
}

#[test]
fn config_parses_from_toml() {
    let c: Config = toml::from_str("spam = 6.5\nwarn_categories = [\"spam\"]\n[actions]\nvirus = \"discard\"\n[scores]\nMIME_UNCLOSED_BOUNDARY = 1.0\n").unwrap();
    assert_eq!(c.spam, 6.5);
    assert_eq!(c.actions.virus, Action::Discard);
    assert!(toml::from_str::<Config>("[actions]\nvirus = \"explode\"\n").is_err());
}

fn severity(a: Action) -> u8 {
    match a {
        Action::Deliver => 0,
        Action::Tag => 1,
        Action::Quarantine | Action::Discard => 2,
        Action::Reject | Action::Tempfail => 3,
    }
}

proptest! {
    #[test]
    fn a_higher_score_is_never_milder(a in -20.0f64..50.0, b in -20.0f64..50.0) {
        let c = Config { reject: 30.0, ..Config::default() };
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(severity(c.decide(&[scored(lo)], None).action) <= severity(c.decide(&[scored(hi)], None).action));
    }
}
