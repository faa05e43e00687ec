//! Architecture invariant: `wal` touches the file system only through its `FileSystem`
//! trait. Only `src/stdfs.rs` (the production implementation) may name the operating
//! system's file APIs; everything else goes through the trait, so the simulated disk sees
//! every call.

use std::path::Path;

/// The production implementation: the one module allowed to use the OS file APIs.
const PRODUCTION_FS: &str = "stdfs.rs";

/// Spellings that reach files without the trait.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "fs::File",
    "File::open",
    "File::create",
    "OpenOptions",
    "FileExt",
    "read_dir",
    "memmap2",
    "Mmap",
    "fallocate",
    "try_lock()",
    "flock",
    ".is_dir()",
    ".exists()",
    "remove_dir",
    "fs::rename",
    "fs::read",
    "fs::write",
    "fs::remove_file",
    "fs::create_dir",
];

/// Lines of `source` (outside comments) that use a forbidden spelling.
fn violations(source: &str) -> Vec<(usize, String)> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| FORBIDDEN.iter().any(|f| line.contains(f)))
        .map(|(n, line)| (n + 1, line.trim().to_owned()))
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn wal_touches_the_file_system_only_through_its_file_system_trait() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 5, "found the crate's sources");
    assert!(
        files.iter().any(|f| f.ends_with(PRODUCTION_FS)),
        "the production implementation lives in src/{PRODUCTION_FS}"
    );
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with(PRODUCTION_FS)) {
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, code) in violations(&text) {
            found.push(format!("{}:{line}: {code}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "file-system calls outside src/{PRODUCTION_FS} (go through wal::FileSystem):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_a_direct_call() {
    let planted = "fn f() {\n    // std::fs in a comment is fine\n    let b = std::fs::read(p);\n}";
    assert_eq!(violations(planted).len(), 1);
    assert!(violations("let f = OpenOptions::new();").len() == 1);
    assert!(violations("self.fs.read(&path)").is_empty());
}
