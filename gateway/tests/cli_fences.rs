//! `fencegate fences check` and `fencegate locate` run as a user would, through the binary.

use std::process::Command;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/fences.geojson");

fn fencegate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .args(args)
        .output()
        .expect("run fencegate")
}

#[test]
fn fences_check_summarises_and_fails_on_errors() {
    let out = fencegate(&["fences", "check", SAMPLE]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("8 valid fence(s), 0 invalid"), "{stdout}");
    assert!(stdout.contains("by tenant: acme 4, globex 4"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.geojson");
    std::fs::write(
        &bad,
        r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","geometry":{"type":"Point","coordinates":[121.47,31.23]},"properties":{"id":"hq-north","tenant":"acme","radius_m":12}},
            {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]},"properties":{"id":"bowtie","tenant":"acme"}}]}"#,
    )
    .unwrap();
    let out = fencegate(&["fences", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("feature 0 (fence 'hq-north'): radius 12 m is below the minimum 50 m"),
        "{stdout}"
    );
    assert!(
        stdout.contains("feature 1 (fence 'bowtie'): ring 0 edges 0 and 2"),
        "{stdout}"
    );
}

#[test]
fn locate_writes_rows_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points.csv");
    let out = dir.path().join("out.csv");
    std::fs::write(
        &points,
        "id,lat,lon\np1,31.2304,121.4737\np2,52.5251,13.3695\np3,0,0\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "locate",
            "--fences",
            SAMPLE,
            "--points",
            points.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fencegate(&args)
    };
    let res = run(&["--tenant", "acme"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "id,fence_id\np1,hq-north\n"
    );
    let stderr = String::from_utf8(res.stderr).unwrap();
    assert!(
        stderr.contains("located 3 points against 8 fences (tenant acme): 1 matches"),
        "{stderr}"
    );

    // Every tenant by default; a malformed line fails the run and leaves the output alone.
    assert!(run(&[]).status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "id,fence_id\np1,hq-north\np2,hq-north\n"
    );
    std::fs::write(&points, "id,lat,lon\np1,31.2304,121.4737\np2,91,0\n").unwrap();
    let res = run(&[]);
    assert!(!res.status.success());
    let stderr = String::from_utf8(res.stderr).unwrap();
    assert!(
        stderr.contains("points.csv: line 3: latitude 91 is outside -90..=90 degrees"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "id,fence_id\np1,hq-north\np2,hq-north\n"
    );
}
