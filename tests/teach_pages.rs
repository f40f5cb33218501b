//! `soloader pages`: text pages are not resident right after mapping and
//! resident after the call; the pages relocation wrote are private copies
//! after relocation; the SVG is well-formed XML with one cell per page and
//! moment.

mod teach_util;

use teach_util::*;

#[test]
fn bigtext_pages_and_svg() {
    let svg = std::env::temp_dir().join(format!("soloader-teach-pages-{}.svg", std::process::id()));
    let svg_s = svg.to_string_lossy().into_owned();
    let path = lib("libbigtext.so");
    let json = parse_json(&stdout_of(&[
        "pages",
        &path,
        "--call",
        "bigtext_run",
        "1024",
        "--json",
        "--svg",
        &svg_s,
    ]));
    let page = json.get("page_size").num();
    let parts = json.get("parts").arr();
    let states = |p: &Json, m: usize| p.get("states").arr()[m].str().to_string();

    // Text: not in this process's page tables right after mmap (nothing
    // touched it), nor after relocation (relocation writes data only);
    // resident after bigtext_run(1024) ran through all 1024 functions.
    let text = parts
        .iter()
        .find(|p| p.get("prot").str().contains('x'))
        .expect("an executable segment");
    let pages = text.get("pages").num() as usize;
    assert!(pages > 32, "libbigtext's text is large: {pages} pages");
    for m in 0..2 {
        let s = states(text, m);
        assert_eq!(s.len(), pages);
        assert!(
            s.chars().all(|c| c == '.'),
            "moment {m}: text resident: {s}"
        );
    }
    let after = states(text, 2);
    assert!(
        !after.contains('.'),
        "text not resident after the call: {after}"
    );
    assert!(
        !after.contains('P'),
        "text pages are the page cache's, never private: {after}"
    );

    // Every page relocation wrote is a private copy after relocation (and
    // was not one right after mapping, except the .bss tail page).
    let relocated: Vec<u64> = json
        .get("relocated_pages")
        .arr()
        .iter()
        .map(Json::hex)
        .collect();
    assert!(!relocated.is_empty());
    for v in &relocated {
        let part = parts
            .iter()
            .find(|p| {
                let lo = p.get("vaddr").hex();
                p.get("kind").str() == "file" && lo <= *v && *v < lo + p.get("pages").num() * page
            })
            .unwrap_or_else(|| panic!("relocated page {v:#x} is in no file-backed part"));
        let i = ((v - part.get("vaddr").hex()) / page) as usize;
        assert_eq!(
            states(part, 1).as_bytes()[i],
            b'P',
            "page {v:#x} after relocation: {}",
            states(part, 1)
        );
    }

    // The SVG: well-formed, one cell per page per moment.
    let doc = std::fs::read_to_string(&svg).expect("the SVG was written");
    let _ = std::fs::remove_file(&svg);
    let counts = check_xml(&doc);
    assert_eq!(counts.get("svg"), Some(&1));
    let total: u64 = parts.iter().map(|p| p.get("pages").num()).sum();
    let cells = doc.matches("<rect class=\"page\"").count() as u64;
    assert_eq!(cells, total * 3, "one cell per page and moment");
    assert_eq!(
        counts.get("rect").copied().unwrap_or(0) as u64,
        cells + 1 + 6,
        "cells, the background and six legend swatches"
    );
}

#[test]
fn bss_pages() {
    // libbss: .bss past the file is anonymous; reading it all (bss_sum)
    // maps the shared zero page, nothing is copied.
    let path = lib("libbss.so");
    let json = parse_json(&stdout_of(&["pages", &path, "--call", "bss_sum", "--json"]));
    let parts = json.get("parts").arr();
    let anon = parts
        .iter()
        .find(|p| p.get("kind").str() == "anonymous")
        .expect("an anonymous .bss part");
    let s: Vec<String> = anon
        .get("states")
        .arr()
        .iter()
        .map(|s| s.str().to_string())
        .collect();
    assert!(s[0].chars().all(|c| c == '.'), "{}", s[0]);
    assert!(!s[2].contains('D'), "bss_sum only reads: {}", s[2]);
    assert!(
        s[2].chars().filter(|&c| c != '.').count() > 0,
        "bss_sum read the .bss: {}",
        s[2]
    );
}

#[test]
fn text_output_has_a_legend_and_three_rows() {
    let path = lib("libarith.so");
    let text = stdout_of(&["pages", &path, "--call", "add", "2", "3", "--ret", "i32"]);
    assert!(text.contains("A = right after mapping"), "{text}");
    assert!(text.contains("add(2, 3) returned 5"), "{text}");
    assert!(text.contains("not resident"), "{text}");
    for line in ["         B ", "         C "] {
        assert!(text.contains(line), "{text}");
    }
}
