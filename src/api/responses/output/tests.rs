use super::*;

fn head() -> Head {
    Head {
        id: "resp_1".into(),
        created_at: 1,
        model: "m".into(),
        echo: Map::new(),
        namespaced: Arc::new(Vec::new()),
    }
}

fn events(out: &BytesMut) -> Vec<(String, Value)> {
    std::str::from_utf8(out)
        .unwrap_or("")
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let name = e.lines().next()?.strip_prefix("event: ")?;
            let data = e.lines().nth(1)?.strip_prefix("data: ")?;
            Some((name.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect()
}

#[test]
fn an_answer_cut_by_its_length_ends_incomplete_and_is_kept_as_such() {
    let kept = Arc::new(std::sync::Mutex::new(None));
    let k = kept.clone();
    let mut e = ResponsesEncoder::new(
        head(),
        3,
        Some(2),
        Some(Box::new(move |f: Finished| {
            *k.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.response);
        })),
    );
    let mut out = BytesMut::new();
    e.piece(Piece::Text("Hello"), &mut out);
    e.piece(Piece::Finish(FinishReason::Length), &mut out);
    e.done(End::default(), &mut out);
    let ev = events(&out);
    let (last, data) = ev.last().unwrap_or_else(|| panic!("no events"));
    assert_eq!(last, "response.incomplete");
    assert_eq!(data["response"]["status"], "incomplete");
    assert_eq!(
        data["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    for (i, (_, d)) in ev.iter().enumerate() {
        assert_eq!(d["sequence_number"], i);
    }
    let kept = kept.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(kept.map(|r| r["status"].clone()), Some(json!("incomplete")));
}

#[test]
fn every_event_is_one_json_object_with_its_type_and_number_once() {
    let mut e = ResponsesEncoder::new(head(), 3, None, None);
    let mut out = BytesMut::new();
    e.piece(Piece::Text("say \"hi\"\n"), &mut out);
    e.piece(
        Piece::ToolCall {
            index: 0,
            id: Some("call_1"),
            name: Some("f"),
            arguments: "{\"a\":",
        },
        &mut out,
    );
    e.piece(
        Piece::ToolCall {
            index: 0,
            id: None,
            name: None,
            arguments: "1}",
        },
        &mut out,
    );
    e.native(
        &json!({"type": "response.reasoning_summary_text.delta", "sequence_number": 9,
                "item_id": "rs_1", "delta": "x"}),
        &mut out,
    );
    e.done(End::default(), &mut out);
    let text = std::str::from_utf8(&out).unwrap_or("");
    let ev = events(&out);
    assert_eq!(ev.len(), text.matches("\n\n").count(), "{text}");
    for (i, (name, d)) in ev.iter().enumerate() {
        assert_eq!(d["type"], name.as_str());
        assert_eq!(d["sequence_number"], i);
    }
    for raw in text.split("\n\n").filter(|r| !r.is_empty()) {
        assert_eq!(raw.matches("\"type\":\"response.").count(), 1, "{raw}");
        assert_eq!(raw.matches("\"sequence_number\"").count(), 1, "{raw}");
    }
    let delta = ev
        .iter()
        .find(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d.clone());
    assert_eq!(
        delta,
        Some(
            json!({"type": "response.output_text.delta", "sequence_number": 4,
            "item_id": delta.as_ref().map_or(Value::Null, |d| d["item_id"].clone()),
            "output_index": 0, "content_index": 0, "delta": "say \"hi\"\n", "logprobs": []})
        )
    );
    let args: Vec<&Value> = ev
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| &d["delta"])
        .collect();
    assert_eq!(args, [&json!("{\"a\":"), &json!("1}")]);
}

#[test]
fn an_upstream_event_type_cannot_split_the_event_line() {
    let mut e = ResponsesEncoder::new(head(), 3, None, None);
    let mut out = BytesMut::new();
    for kind in [
        "response.x\nevent: response.completed",
        "response.x\r",
        "Response.X",
        "",
    ] {
        e.native(&json!({"type": kind, "delta": "x"}), &mut out);
    }
    e.native(&json!({"delta": "no type"}), &mut out);
    e.native(
        &json!({"type": "response.reasoning_text.delta", "delta": "y"}),
        &mut out,
    );
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.reasoning_text.delta"
        ]
    );
    let text = std::str::from_utf8(&out).unwrap_or("");
    assert_eq!(text.matches("event: ").count(), 3, "{text}");
}

#[test]
fn a_failed_stream_is_not_kept_and_drops_its_unfinished_item() {
    let mut e = ResponsesEncoder::new(
        head(),
        3,
        None,
        Some(Box::new(|_| panic!("a failed response is not kept"))),
    );
    let mut out = BytesMut::new();
    e.piece(Piece::Text("Hel"), &mut out);
    let body = ErrorBody::new(crate::exchange::ErrorType::ServerError, "cut").code("upstream_cut");
    e.error(&body, &mut out);
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
    let failed = &ev[ev.len() - 1].1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "upstream_cut");
    assert_eq!(failed["output"], json!([]));
}
