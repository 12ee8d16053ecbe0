use super::*;
use crate::store::index::EventIndex;
use kiroku_proto::event::Kind;
use kiroku_proto::{Attachment, EmailEvent, Event, FileEvent, SearchRequest};

/// The terms of `text` with their positions.
fn terms(mode: Mode, text: &str) -> Vec<(String, usize)> {
    let mut t = CjkTokenizer::new(mode);
    let mut s = t.token_stream(text);
    let mut v = Vec::new();
    while s.advance() {
        v.push((s.token().text.clone(), s.token().position));
    }
    v
}

fn expect(spec: &str) -> Vec<(String, usize)> {
    spec.split_whitespace()
        .map(|tp| {
            let (t, p) = tp.rsplit_once('@').expect("term@position");
            (t.to_string(), p.parse().expect("position"))
        })
        .collect()
}

#[test]
fn terms_and_positions() {
    let long = "a".repeat(100);
    let cut = format!("{}@0", "a".repeat(MAX_WORD_CHARS));
    for (mode, text, want) in [
        (Mode::Index, "Hello, World", "hello@0 world@1"),
        (
            Mode::Index,
            "/home/alice/Q3 Report.pdf",
            "home@0 alice@1 q3@2 report@3 pdf@4",
        ),
        (Mode::Index, "株", "株@0"),
        (Mode::Query, "株", "株@0"),
        (Mode::Index, "売上", "売@0 売上@0 上@1"),
        (Mode::Query, "売上", "売上@0"),
        (
            Mode::Index,
            "売上報告",
            "売@0 売上@0 上@1 上報@1 報@2 報告@2 告@3",
        ),
        (Mode::Query, "売上報告", "売上@0 上報@1 報告@2"),
        (
            Mode::Index,
            "Q3売上report",
            "q3@0 売@1 売上@1 上@2 report@3",
        ),
        (Mode::Query, "Q3売上report", "q3@0 売上@1 report@3"),
        (Mode::Query, "上report", "上@0 report@1"),
        // Katakana with the prolonged sound mark is one run; the middle
        // dot separates.
        (Mode::Query, "データ・ベース", "デー@0 ータ@1 ベー@3 ース@4"),
        (Mode::Query, "한국어", "한국@0 국어@1"),
        // NFKC: full-width ASCII, half-width kana (ｶﾞ is two characters
        // that become one), circled and parenthesised forms.
        (Mode::Query, "ＡＢＣ１２３", "abc123@0"),
        (Mode::Query, "ｶﾞｲﾄﾞ", "ガイ@0 イド@1"),
        (Mode::Index, "㈱", "株@0"),
        (Mode::Query, "Ünïcödé STRASSE", "ünïcödé@0 strasse@1"),
        (Mode::Query, "ﬁle", "file@0"),
        // Separators between CJK runs: the ideographic space and
        // full-width brackets.
        (Mode::Query, "（至急）売上　報告", "至急@0 売上@2 報告@4"),
        (Mode::Index, &long, &cut),
        (Mode::Index, "", ""),
        (Mode::Index, " ... ", ""),
    ] {
        assert_eq!(terms(mode, text), expect(want), "{mode:?} {text:?}");
    }
}

#[test]
fn variants_analyse_alike() {
    for (a, b) in [
        ("ＡＢＣ", "abc"),
        ("ABC", "abc"),
        ("ｶﾞｽ", "ガス"),
        ("ﾃﾞｰﾀ", "データ"),
        ("Ｑ３売上ＲＥＰＯＲＴ", "q3売上report"),
        ("e\u{301}", "é"),
    ] {
        for mode in [Mode::Index, Mode::Query] {
            assert_eq!(terms(mode, a), terms(mode, b), "{mode:?}: {a} / {b}");
        }
    }
}

#[test]
fn a_sixty_character_sentence_keeps_every_term() {
    let subject = "第3四半期の売上報告と来期予算についての至急のお願いと見積書の送付および会議日程の調整に関するご連絡です皆様よろしく以上";
    assert_eq!(subject.chars().count(), 60);
    let n = subject.chars().filter(|c| is_cjk(*c)).count();
    let t = terms(Mode::Index, subject);
    // Two runs (digit 3 splits), each of n_i characters gives n_i unigrams
    // and n_i - 1 bigrams, plus the word "3".
    assert_eq!(t.len(), 2 * n - 2 + 1, "{t:?}");
    assert!(t.iter().any(|(s, _)| s == "見積"));
}

#[test]
fn offsets_point_into_the_original_text() {
    for text in [
        "ｶﾞｲﾄﾞ ＡＢＣ",
        "Q3売上report",
        "e\u{301}t\u{e9} ㈱",
        "İstanbul",
    ] {
        let mut t = CjkTokenizer::new(Mode::Index);
        let mut s = t.token_stream(text);
        while s.advance() {
            let tok = s.token();
            let src = text.get(tok.offset_from..tok.offset_to);
            assert!(src.is_some_and(|s| !s.is_empty()), "{text:?}: {tok:?}");
        }
    }
}

/// Normalising in segments gives the NFKC of the whole text.
#[test]
fn segmented_normalisation_equals_whole_text_nfkc() {
    for text in [
        "ｶﾞｷﾞｸﾞｹﾞｺﾞﾊﾟﾋﾟ",
        "e\u{301}\u{323}a\u{323}\u{301}",
        "\u{1100}\u{1161}\u{11a8}",
        "ﾍﾞｰｽﾎﾞｰﾙ①②",
        "Åström ﬀ ㍻",
    ] {
        let mut v = Vec::new();
        normalise(text, &mut v);
        let got: String = v.iter().map(|n| n.c).collect();
        let want: String = text.nfkc().flat_map(char::to_lowercase).collect();
        assert_eq!(got, want, "{text:?}");
    }
}

/// Random text from characters that stress normalisation and cutting:
/// no panic, every token's offsets are a non-empty slice of the text, and
/// positions never go backwards.
#[test]
fn random_text_never_breaks_the_stream() {
    use rand::{Rng, SeedableRng};
    let pool: Vec<char> = "aZ9 .-_/\t\n売上報告株ｶﾞﾃﾞｰﾀﾞﾟ゙゚ーｰ・㈱①ＡＢＣｑ３e\u{301}\u{323}İß한\u{1100}\u{1161}\u{11a8}ﬁ\u{fffd}😀\u{200b}"
        .chars()
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..2000 {
        let len = rng.random_range(0..40);
        let text: String = (0..len)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .collect();
        for mode in [Mode::Index, Mode::Query] {
            let mut t = CjkTokenizer::new(mode);
            let mut s = t.token_stream(&text);
            assert_eq!(s.token().text, "", "before the first advance");
            let mut last = 0;
            while s.advance() {
                let tok = s.token();
                assert!(!tok.text.is_empty(), "{text:?}");
                assert!(tok.position >= last, "{text:?}: {tok:?}");
                last = tok.position;
                let src = text.get(tok.offset_from..tok.offset_to);
                assert!(src.is_some_and(|s| !s.is_empty()), "{text:?}: {tok:?}");
            }
            assert!(!s.advance(), "stays at the end");
        }
    }
}

fn mail(id: &str, subject: &str, body: &str, attachment: &str) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "a1".into(),
        observed_at_ms: 1_000,
        kind: Some(Kind::Email(EmailEvent {
            mail_from: "a@example.jp".into(),
            subject: subject.into(),
            body_text: body.into(),
            attachments: vec![Attachment {
                filename: attachment.into(),
                ..Default::default()
            }],
            attachment_count: 1,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Query syntax over the CJK analyzer, in Japanese and English: words are
/// ANDed, `"…"` is a phrase, `OR` and `-word` work, CJK runs are phrases.
#[test]
fn query_syntax_in_japanese_and_english() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(dir.path()).expect("index");
    idx.add(&[
        mail(
            "m1",
            "第3四半期の売上報告と来期予算について（至急）",
            "Please find the quarterly sales report attached.",
            "見積書_2026.pdf",
        ),
        mail(
            "m2",
            "売上の件と報告会のご案内",
            "The report on sales follows next week.",
            "agenda.docx",
        ),
        mail(
            "m3",
            "Ｑ３売上ＲＥＰＯＲＴ ｶﾞｲﾄﾞﾗｲﾝ",
            "株式会社サンプル御中",
            "ﾃﾞｰﾀ一覧.xlsx",
        ),
    ])
    .expect("add");
    idx.commit().expect("commit");
    let find = |field: &str, q: &str| -> Vec<String> {
        let mut r = SearchRequest::default();
        match field {
            "text" => r.text = q.into(),
            "subject" => r.subject = q.into(),
            "attachment" => r.attachment_name = q.into(),
            _ => unreachable!("test table field"),
        }
        let (found, _, _) = idx.search(&r, 0, 10).expect(q);
        let mut ids: Vec<String> = found.into_iter().map(|e| e.event_id).collect();
        ids.sort();
        ids
    };
    for (field, q, want) in [
        // Substrings of 1, 2, 3 and 6 characters.
        ("subject", "売", "m1 m2 m3"),
        ("subject", "売上", "m1 m2 m3"),
        ("subject", "売上報", "m1"),
        ("subject", "売上報告と来", "m1"),
        ("subject", "至急", "m1"),
        // Characters present but not adjacent: no match.
        ("subject", "売上報告会", ""),
        ("subject", "報告会", "m2"),
        ("subject", "の売上報告", "m1"),
        // The whole subject, as typed (with its full-width brackets).
        (
            "subject",
            "第3四半期の売上報告と来期予算について（至急）",
            "m1",
        ),
        // Words are ANDed; a quoted phrase; OR; -word.
        ("subject", "売上 至急", "m1"),
        ("subject", "売上 案内", "m2"),
        ("subject", "\"売上報告\"", "m1"),
        ("subject", "至急 OR 案内", "m1 m2"),
        ("subject", "売上 -至急", "m2 m3"),
        // Excluded phrases, matching and matching nothing (tantivy's
        // phrase exclusion, see index/exclusions.rs).
        ("subject", "売上 -報告会", "m1 m3"),
        ("subject", "売上 -予算案", "m1 m2 m3"),
        ("attachment", "pdf -見積書", ""),
        ("text", "report -\"sales report\"", "m2 m3"),
        ("text", "sales report", "m1 m2"),
        ("text", "\"sales report\"", "m1"),
        ("text", "quarterly OR week", "m1 m2"),
        ("text", "report -quarterly", "m2 m3"),
        // The ideographic space separates words as an ASCII one does.
        ("subject", "売上\u{3000}至急", "m1"),
        // Full-width, half-width and case variants find each other.
        ("subject", "q3売上report", "m3"),
        ("subject", "Q3売上REPORT", "m3"),
        ("subject", "ガイドライン", "m3"),
        ("subject", "ｶﾞｲﾄﾞ", "m3"),
        ("subject", "ｑ３", "m3"),
        ("text", "株", "m3"),
        ("text", "御中", "m3"),
        // Attachment names.
        ("attachment", "見積書", "m1"),
        ("attachment", "見積", "m1"),
        ("attachment", "データ", "m3"),
        ("attachment", "ﾃﾞｰﾀ一覧", "m3"),
        ("attachment", "pdf", "m1"),
        ("attachment", "一覧 OR agenda", "m2 m3"),
    ] {
        let want: Vec<String> = want.split_whitespace().map(String::from).collect();
        assert_eq!(find(field, q), want, "{field}: {q}");
    }
}

#[test]
fn path_phrases_with_cjk_and_latin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(dir.path()).expect("index");
    let file = |id: &str, path: &str| Event {
        event_id: id.into(),
        agent_id: "a1".into(),
        observed_at_ms: 1_000,
        kind: Some(Kind::File(FileEvent {
            operation: "create".into(),
            path: path.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    idx.add(&[
        file("f1", "/home/alice/Q3 Report.pdf"),
        file("f2", "/home/bob/共有/売上報告書_2026.xlsx"),
        file("f3", "/home/bob/売上/報告.txt"),
    ])
    .expect("add");
    idx.commit().expect("commit");
    let find = |q: &str| -> Vec<String> {
        let r = SearchRequest {
            path: q.into(),
            ..Default::default()
        };
        let (found, _, _) = idx.search(&r, 0, 10).expect(q);
        let mut ids: Vec<String> = found.into_iter().map(|e| e.event_id).collect();
        ids.sort();
        ids
    };
    for (q, want) in [
        ("alice/q3 report.pdf", "f1"),
        ("ＡＬＩＣＥ", "f1"),
        ("売上報告書", "f2"),
        ("共有/売上", "f2"),
        // Separators take no position, in CJK as in Latin text (`q3-report`
        // finds `Q3 Report`): split words find the joined ones too, not
        // the other way round.
        ("売上/報告", "f2 f3"),
        ("売上報告", "f2"),
        ("報", "f2 f3"),
        ("bob/売上", "f3"),
        // A path is a phrase: its words must be adjacent.
        ("bob 報告", ""),
    ] {
        let want: Vec<String> = want.split_whitespace().map(String::from).collect();
        assert_eq!(find(q), want, "path {q}");
    }
}
