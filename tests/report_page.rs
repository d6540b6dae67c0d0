//! `ffstream report` writes `results/index.html`, one self-contained page; headless Chromium
//! (Debian's package, scripts/install-deps) loads it and the page's own check finds every image
//! decoded and no script error (issue 12).

use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_report_page_loads_in_chromium_with_every_figure_and_no_script_error() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("results"), &results);
    std::fs::remove_file(results.join("index.html")).ok();
    // Run from the temporary folder: the report also rewrites ./README.md's table.
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["report", "--results"])
        .arg(&results)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(results.join("index.html")).unwrap();
    assert!(!page.contains("src=\"http") && !page.contains("src=\"/"), "the page is self-contained");
    let figures = std::fs::read_dir(results.join("figures")).unwrap().count();
    let images = page.matches("<img ").count();
    assert!(images > figures, "{images} images for {figures} figures and the charts");

    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("Chromium is installed (scripts/install-deps installs Debian's `chromium`)");
    let url = format!("file://{}", results.join("index.html").display());
    let dom = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let check = dom.split("data-check=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("no check");
    assert_eq!(check, format!("images {images}/{images}; errors 0"), "the page's own check");
}
