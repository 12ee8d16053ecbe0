//! Keywords for the `keyword` rule, matched the way `kiroku search` finds
//! text: both sides go through the index's own analyzer
//! (`store/index/analyzer.rs`: NFKC, lower case, CJK runs as bigrams), and
//! a keyword matches where its terms sit at the same relative positions as
//! the query parser would ask of a phrase. So `機密` matches `社外秘・機密資料`,
//! `ＣＯＮＦＩＤＥＮＴＩＡＬ` matches `confidential`, and `売上報告` does not match
//! `売上の報告` — exactly what a search for the word would find.

use std::collections::HashMap;

use tantivy::tokenizer::{TextAnalyzer, TokenStream};

use crate::store::index::analyzer::{index_analyzer, query_analyzer};

/// One keyword's terms with their offsets from the first.
#[derive(Debug, Clone)]
struct Phrase {
    word: String,
    terms: Vec<(String, usize)>,
}

/// The keywords of one rule.
#[derive(Debug, Clone)]
pub struct Keywords {
    phrases: Vec<Phrase>,
}

fn tokens(a: &mut TextAnalyzer, text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut ts = a.token_stream(text);
    while ts.advance() {
        let t = ts.token();
        out.push((t.text.clone(), t.position));
    }
    out
}

impl Keywords {
    /// The keywords; an error names one that has no searchable characters.
    pub fn new(words: &[String]) -> Result<Keywords, String> {
        if words.is_empty() {
            return Err("name at least one word, e.g. [\"confidential\", \"社外秘\"]".into());
        }
        let mut q = query_analyzer();
        let mut phrases = Vec::new();
        for w in words {
            let terms = tokens(&mut q, w);
            let Some(first) = terms.first().map(|(_, p)| *p) else {
                return Err(format!(
                    "{w:?} has no letters, digits or CJK characters to match"
                ));
            };
            phrases.push(Phrase {
                word: w.clone(),
                terms: terms.into_iter().map(|(t, p)| (t, p - first)).collect(),
            });
        }
        Ok(Keywords { phrases })
    }

    /// The keywords (as written) found in any of `texts`.
    pub fn found(&self, texts: &[&str]) -> Vec<String> {
        let mut idx = index_analyzer();
        let mut out: Vec<String> = Vec::new();
        for text in texts.iter().filter(|t| !t.is_empty()) {
            let mut at: HashMap<String, Vec<usize>> = HashMap::new();
            for (t, p) in tokens(&mut idx, text) {
                at.entry(t).or_default().push(p);
            }
            for ph in &self.phrases {
                if out.contains(&ph.word) {
                    continue;
                }
                let Some(starts) = at.get(&ph.terms[0].0) else {
                    continue;
                };
                let hit = starts.iter().any(|s| {
                    ph.terms[1..].iter().all(|(t, off)| {
                        at.get(t)
                            .is_some_and(|ps| ps.binary_search(&(s + off)).is_ok())
                    })
                });
                if hit {
                    out.push(ph.word.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_as_a_search_would() {
        let k = Keywords::new(&[
            "機密".into(),
            "ＣＯＮＦＩＤＥＮＴＩＡＬ".into(),
            "売上報告".into(),
            "project x".into(),
        ])
        .expect("keywords");
        let cases: &[(&str, &[&str])] = &[
            ("社外秘・機密資料です", &["機密"]),
            ("This is Confidential.", &["ＣＯＮＦＩＤＥＮＴＩＡＬ"]),
            ("第3四半期の売上報告", &["売上報告"]),
            ("売上の報告", &[]),
            ("about Project X soon", &["project x"]),
            ("project then x", &[]),
            ("confidentiality", &[]),
            ("ｷﾐﾂ 機 密", &[]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(k.found(&[text]), *want, "{text}");
        }
        // Subject and body together, each keyword once.
        assert_eq!(
            k.found(&["機密", "confidential 機密"]),
            ["機密", "ＣＯＮＦＩＤＥＮＴＩＡＬ"]
        );
        assert!(Keywords::new(&["・！".into()]).is_err());
        assert!(Keywords::new(&[]).is_err());
    }
}
