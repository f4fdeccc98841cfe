//! Every scenario in `simulators/scenarios/` runs against an in-process gateway and must raise
//! exactly the cases it lists, with no false alarm and no duplicate.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use streetgate_simulators::scenario::{Scenario, verify};

fn scenarios() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        // STREETGATE_SCENARIO=name runs the files whose name contains it.
        .filter(|p| {
            std::env::var("STREETGATE_SCENARIO").map_or(true, |only| {
                p.file_stem()
                    .is_some_and(|n| n.to_string_lossy().contains(&only))
            })
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let files = scenarios();
    assert!(!files.is_empty());
    for file in files {
        let scenario = Scenario::load(&file).unwrap();
        let report = verify(&scenario, |_| {}).await.unwrap();
        println!("{}", report.render(&scenario.name, scenario.speed));
        assert!(
            report.passed(),
            "{}:\n{}",
            file.display(),
            report.render(&scenario.name, scenario.speed)
        );
    }
}

#[test]
fn a_bad_scenario_names_line_and_field() {
    let err = Scenario::parse("name = \"x\"\ndevices = 10\nspeed = 60\nduration_s = 60\n\n[[fault]]\nat_s = 5\nkind = \"meteor\"\ndevices = []\n").unwrap_err().to_string();
    assert!(err.contains("line 8") && err.contains("meteor"), "{err}");
    let err = Scenario::parse("name = \"x\"\ndevices = 10\nspeed = 60\nduraton_s = 60\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 4") && err.contains("duraton_s"), "{err}");
}

#[test]
fn the_demo_runs_its_scenario_file_and_new_fields_are_checked() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.toml");
    let s = Scenario::load(&file).unwrap();
    let embedded = Scenario::parse(streetgate_simulators::demo::DEMO_SCENARIO).unwrap();
    assert_eq!(format!("{s:?}"), format!("{embedded:?}"));
    assert!(s.strict && s.teams.is_some() && s.collection.is_some() && s.bins.is_some());
    assert!(
        s.expect
            .iter()
            .filter(|e| e.subject.is_some())
            .all(|e| e.lifecycle.is_some())
    );
    let base = "name = \"x\"\ndevices = 10\nspeed = 60\nduration_s = 60\n";
    let err = Scenario::parse(&format!("{base}\n[teams]\naccept = 5\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 7") && err.contains("accept"), "{err}");
    let err = Scenario::parse(&format!(
        "{base}\n[bins]\ninitial_pct = [50.0, 10.0]\nrate_pct_h = [1.0, 2.0]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("bins.initial_pct"), "{err}");
    let err = Scenario::parse(&format!(
        "{base}\n[[expect]]\ncase_type = \"lamp_fault\"\nlifecycle = [\"fixed\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 8") && err.contains("fixed"), "{err}");
}
