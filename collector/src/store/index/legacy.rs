//! What an index of an older schema can answer while its successor is
//! rebuilt (`index/rebuild.rs`): the search filters of the `SearchRequest`
//! it was written for (fields 1–23), each only when that index has the
//! fields it reads. Any other request field is a filter added since,
//! which the old index has no field for: [`refusal`] refuses it here, in
//! one place, so a new filter needs no code of its own to be refused on an
//! old index — it is simply not in this list.

use kiroku_proto::SearchRequest;

/// Why the index of an older schema (lacking the fields `missing`) cannot
/// answer `r`; None when it can.
pub(super) fn refusal(r: &SearchRequest, missing: &[String]) -> Option<String> {
    // The request as far as the legacy filters go: a request that sets
    // anything else differs from it. (While the proto has no other field
    // the struct update is empty, hence the `allow`; it is what leaves
    // every field added later at its default here.)
    #[allow(clippy::needless_update)]
    let legacy = SearchRequest {
        from_ms: r.from_ms,
        to_ms: r.to_ms,
        host: r.host.clone(),
        user: r.user.clone(),
        agent_id: r.agent_id.clone(),
        address: r.address.clone(),
        sender: r.sender.clone(),
        recipient: r.recipient.clone(),
        text: r.text.clone(),
        subject: r.subject.clone(),
        has_attachment: r.has_attachment,
        attachment_name: r.attachment_name.clone(),
        sha256: r.sha256.clone(),
        tag: r.tag.clone(),
        page_size: r.page_size,
        page_token: r.page_token.clone(),
        outcome: r.outcome.clone(),
        kind: r.kind.clone(),
        path: r.path.clone(),
        operation: r.operation.clone(),
        removable: r.removable,
        alert: r.alert.clone(),
        corrected_time: r.corrected_time,
        // Oldest first reads the same time column as newest first.
        ascending: r.ascending,
        ..Default::default()
    };
    if &legacy != r {
        return Some("this filter".into());
    }
    // Each legacy filter that is set, with the index fields it reads (an
    // index older still may lack some of them).
    let time = if r.corrected_time {
        "corrected_at"
    } else {
        "observed_at"
    };
    // `*@domain` in --sender / --recipient reads the exact domain column,
    // which an older index does not have.
    let domain_pattern = |v: &str| {
        !v.trim().is_empty()
            && matches!(
                kiroku_common::search::AddressPattern::parse(v),
                Ok(kiroku_common::search::AddressPattern::Domain(_))
            )
    };
    let used: [(&str, bool, &[&str]); 22] = [
        (
            "the filter --sender with *@domain",
            domain_pattern(&r.sender),
            &["sender_domain"],
        ),
        (
            "the filter --recipient with *@domain",
            domain_pattern(&r.recipient),
            &["recipient_domain"],
        ),
        ("the time range", r.from_ms != 0 || r.to_ms != 0, &[time]),
        ("ordering by this time", true, &[time, "event"]),
        ("the filter --host", !r.host.is_empty(), &["host"]),
        ("the filter --user", !r.user.is_empty(), &["user"]),
        ("the filter --agent", !r.agent_id.is_empty(), &["agent_id"]),
        ("the filter --address", !r.address.is_empty(), &["address"]),
        ("the filter --sender", !r.sender.is_empty(), &["sender"]),
        (
            "the filter --recipient",
            !r.recipient.is_empty(),
            &["recipient"],
        ),
        (
            "the filter --text",
            !r.text.trim().is_empty(),
            &["subject", "body"],
        ),
        (
            "the filter --subject",
            !r.subject.trim().is_empty(),
            &["subject"],
        ),
        (
            "the filter --has-attachment",
            r.has_attachment,
            &["has_attachment"],
        ),
        (
            "--attachment",
            !r.attachment_name.trim().is_empty(),
            &["attachment_name"],
        ),
        ("--sha256", !r.sha256.is_empty(), &["sha256"]),
        ("the filter --tag", !r.tag.is_empty(), &["tag"]),
        ("the filter --alert", !r.alert.trim().is_empty(), &["tag"]),
        ("the filter --outcome", !r.outcome.is_empty(), &["outcome"]),
        ("the filter --kind", !r.kind.is_empty(), &["kind"]),
        ("the filter --path", !r.path.trim().is_empty(), &["path"]),
        ("the filter --op", !r.operation.is_empty(), &["operation"]),
        ("the filter --removable", r.removable, &["removable"]),
    ];
    used.iter()
        .find(|(_, set, fields)| *set && fields.iter().any(|f| missing.iter().any(|m| m == f)))
        .map(|(name, _, _)| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_filters_are_answered_when_the_old_index_has_their_fields() {
        let none: Vec<String> = Vec::new();
        let no_path = vec!["path".to_string(), "source_path".to_string()];
        #[allow(clippy::needless_update)]
        let every = SearchRequest {
            from_ms: 1,
            to_ms: 2,
            host: "h".into(),
            user: "u".into(),
            agent_id: "a".into(),
            address: "x@y".into(),
            sender: "s@y".into(),
            recipient: "r@y".into(),
            text: "t".into(),
            subject: "s".into(),
            has_attachment: true,
            attachment_name: "a.pdf".into(),
            sha256: "00".into(),
            tag: "t".into(),
            page_size: 10,
            page_token: "10".into(),
            outcome: "delivered".into(),
            kind: "email".into(),
            path: String::new(),
            operation: "create".into(),
            removable: true,
            alert: "*".into(),
            corrected_time: true,
            ..Default::default()
        };
        let with_path = SearchRequest {
            path: "plan".into(),
            ..Default::default()
        };
        let sorted_by_corrected = SearchRequest {
            corrected_time: true,
            ..Default::default()
        };
        let no_corrected = vec!["corrected_at".to_string()];
        let table: [(&str, &SearchRequest, &[String], Option<&str>); 6] = [
            ("every legacy filter", &every, &none, None),
            ("no filter", &SearchRequest::default(), &none, None),
            ("path on an index with it", &with_path, &none, None),
            (
                "path on an index without it",
                &with_path,
                &no_path,
                Some("the filter --path"),
            ),
            ("other fields missing", &every, &no_path, None),
            (
                "corrected order without corrected_at",
                &sorted_by_corrected,
                &no_corrected,
                Some("ordering by this time"),
            ),
        ];
        for (what, r, missing, want) in table {
            assert_eq!(refusal(r, missing).as_deref(), want, "{what}");
        }
    }

    #[test]
    fn a_domain_pattern_needs_the_domain_column() {
        let missing = vec!["sender_domain".to_string(), "recipient_domain".to_string()];
        let r = SearchRequest {
            recipient: "*@gmail.com".into(),
            ..Default::default()
        };
        assert!(refusal(&r, &missing).is_some_and(|w| w.contains("--recipient")));
        let exact = SearchRequest {
            recipient: "bob@gmail.com".into(),
            ascending: true,
            ..Default::default()
        };
        assert_eq!(refusal(&exact, &missing), None);
    }
}
