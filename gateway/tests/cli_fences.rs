//! `fencegate fences check` and `fencegate locate` run as a user would, through the binary,
//! including where `--out` points: a regular file (replaced by rename), a symlink, a FIFO,
//! `/dev/null` (written through, left in place) or `-` (stdout).

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

/// Runs `locate` on one point inside acme's hq-north with `--out out`.
fn locate_to(out: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    let points = dir.join("points.csv");
    std::fs::write(&points, "id,lat,lon\np1,31.2304,121.4737\n").unwrap();
    let res = fencegate(&[
        "locate",
        "--fences",
        SAMPLE,
        "--points",
        points.to_str().unwrap(),
        "--tenant",
        "acme",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    res
}

const ROWS: &str = "id,fence_id\np1,hq-north\n";

/// Names in `dir`, sorted: no temporary file may be left behind.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[cfg(unix)]
#[test]
fn locate_replaces_a_regular_out_file_by_rename() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    std::fs::write(&out, "old rows\n").unwrap();
    // A reader that opened the old file keeps seeing it whole: the new file
    // is a new inode renamed over the name, not the old one rewritten.
    let held = dir.path().join("held.csv");
    std::fs::hard_link(&out, &held).unwrap();
    let before = std::fs::metadata(&out).unwrap().ino();
    locate_to(&out, dir.path());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), ROWS);
    assert_ne!(
        std::fs::metadata(&out).unwrap().ino(),
        before,
        "replaced, not rewritten"
    );
    assert_eq!(std::fs::read_to_string(&held).unwrap(), "old rows\n");
    assert_eq!(names(dir.path()), ["held.csv", "out.csv", "points.csv"]);
}

#[cfg(unix)]
#[test]
fn locate_writes_through_a_symlink_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.csv");
    std::fs::write(&target, "old rows, longer than the new ones\n").unwrap();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    locate_to(&link, dir.path());
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link survives");
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), ROWS);
    assert_eq!(names(dir.path()), ["link.csv", "points.csv", "target.csv"]);
}

#[cfg(unix)]
#[test]
fn locate_writes_through_a_fifo_and_keeps_it() {
    use std::os::unix::fs::FileTypeExt as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("rows.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        // Opening a FIFO blocks until the other end opens: read on a thread.
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    locate_to(&fifo, dir.path());
    // Renamed over instead of written through, the pipe would never see a
    // writer: fail instead of hanging on the reader.
    // Polled for at most 10 s (500 × 20 ms).
    for _ in 0..500 {
        if reader.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(reader.is_finished(), "nothing was written through the FIFO");
    assert_eq!(
        reader.join().unwrap(),
        ROWS,
        "the rows went through the pipe"
    );
    let meta = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(meta.file_type().is_fifo(), "the FIFO is still a FIFO");
    assert_eq!(names(dir.path()), ["points.csv", "rows.fifo"]);
}

#[cfg(unix)]
#[test]
fn locate_out_dev_null_leaves_the_device_alone() {
    use std::os::unix::fs::FileTypeExt as _;
    let null = std::path::Path::new("/dev/null");
    let is_char = || {
        std::fs::symlink_metadata(null)
            .unwrap()
            .file_type()
            .is_char_device()
    };
    assert!(is_char(), "/dev/null is a character device on this host");
    // Guard: the binary decides with this same function. Were it to regress
    // to rename, running it as root would replace the host's /dev/null, so
    // the test fails here first and never runs the binary.
    assert_eq!(
        fencegate::persist::Target::of(null).unwrap(),
        fencegate::persist::Target::WriteThrough(null.into()),
        "/dev/null must be written through, never renamed over"
    );
    let dir = tempfile::tempdir().unwrap();
    locate_to(null, dir.path());
    assert!(is_char(), "/dev/null is still a character device");
    assert_eq!(names(dir.path()), ["points.csv"]);
}

#[test]
fn locate_out_dash_is_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let res = locate_to(std::path::Path::new("-"), dir.path());
    assert_eq!(String::from_utf8(res.stdout).unwrap(), ROWS);
    assert_eq!(names(dir.path()), ["points.csv"], "no file named '-'");
}
