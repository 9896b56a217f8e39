//! `offpeak crd print` (what an install pipes to `kubectl apply -f -`) prints exactly the
//! files checked in under `crds/`, byte for byte, each once.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// `crds/*.yaml`, by file name.
fn checked_in() -> BTreeMap<String, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("a readable CRD file");
            (name, text)
        })
        .collect()
}

/// The YAML documents of `text`, each from its `---` line to the next one.
fn documents(text: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = text
        .match_indices("---\n")
        .map(|(i, _)| i)
        .filter(|i| *i == 0 || text.as_bytes()[i - 1] == b'\n')
        .collect();
    starts.push(text.len());
    starts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

#[test]
fn crd_print_prints_the_checked_in_crds_byte_for_byte() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_offpeak"))
        .args(["crd", "print"])
        .output()
        .expect("offpeak runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(printed.starts_with("---\n"), "{printed:.200}");
    let files = checked_in();
    assert_eq!(files.len(), 6, "{:?}", files.keys());
    let mut unprinted: Vec<&String> = files.keys().collect();
    let docs = documents(&printed);
    assert_eq!(docs.len(), files.len(), "documents printed");
    for doc in docs {
        let Some((name, _)) = files.iter().find(|(_, text)| text.as_str() == doc) else {
            let head: String = doc.lines().take(8).collect::<Vec<_>>().join("\n");
            panic!("a printed CRD matches no file in crds/:\n{head}");
        };
        unprinted.retain(|n| *n != name);
    }
    assert!(unprinted.is_empty(), "not printed: {unprinted:?}");
    // And nothing else: the documents are all there is.
    let total: usize = files.values().map(String::len).sum();
    assert_eq!(printed.len(), total);
}
