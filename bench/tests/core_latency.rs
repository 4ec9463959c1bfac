//! `netmigrate core-latency`: a figure from a real measurement, and clear refusals.

use std::process::Command;

fn netmigrate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netmigrate"))
        .args(args)
        .output()
        .expect("netmigrate runs")
}

#[test]
fn a_round_trip_between_two_cores_is_measured() {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    assert!(cores.len() >= 2, "this test needs two cores");
    let pair = format!("{},{}", cores[0].id, cores[1].id);
    let out = netmigrate(&["core-latency", "--cores", &pair, "--rounds", "20000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns: f64 = stdout
        .split("round trip ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no round trip in {stdout:?}"));
    // A line cannot cross cores in under a nanosecond, and the deadline is 10 s in total.
    assert!(ns > 1.0 && ns < 1e6, "{ns} ns");
}

#[test]
fn bad_core_lists_are_refused_with_a_message() {
    for (cores, says) in [
        ("0,0", "two different cores"),
        ("0", "separated by a comma"),
        ("0,100000", "not available"),
    ] {
        let out = netmigrate(&["core-latency", "--cores", cores]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--cores {cores} accepted");
        assert!(stderr.contains(says), "--cores {cores}: {stderr}");
    }
}
