//! The ledger's log of what the rules did: one line per protocol event,
//! through `tracing` (level `info`; slashes, timeouts, failures and
//! unresponsive nodes at `warn`; skipped candidates at `debug`), with the
//! execution, task and node as fields.

use splitup_protocol::Event;

/// A key (serialized as 32 numbers) as 64 hex digits.
fn key_hex(v: &serde_json::Value) -> Option<String> {
    let bytes = v.as_array()?;
    if bytes.len() != 32 {
        return None;
    }
    bytes
        .iter()
        .map(|b| b.as_u64().filter(|b| *b < 256).map(|b| format!("{b:02x}")))
        .collect()
}

/// The event's other fields, keys in hex, in one `name=value` list.
fn rest(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "execution" | "task" | "node" | "proof"))
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::Array(a) if a.iter().all(|x| x.is_array()) => {
                    format!("[{}]", a.iter().filter_map(key_hex).collect::<Vec<_>>().join(","))
                }
                serde_json::Value::String(s) => format!("{s:?}"),
                other => key_hex(other).unwrap_or_else(|| other.to_string()),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Logs each event. Runs on every instruction the ledger applies: an
/// event is turned into fields only when its line passes `RUST_LOG`.
pub fn log(events: &[Event]) {
    for e in events {
        macro_rules! at {
            ($level:ident, $macro:ident) => {
                if tracing::enabled!(target: "splitup_ledger::events", tracing::Level::$level) {
                    if let Some((name, execution, task, node, rest)) = fields(e) {
                        tracing::$macro!(
                            target: "splitup_ledger::events",
                            execution,
                            task,
                            node = node.as_deref().map(tracing::field::display),
                            "{name} {rest}"
                        )
                    }
                }
            };
        }
        match e {
            Event::Skipped { .. } => at!(DEBUG, debug),
            Event::Slashed { .. }
            | Event::TimedOut { .. }
            | Event::ExecutionFailed { .. }
            | Event::NodeUnresponsive { .. }
            | Event::Unrunnable { .. } => at!(WARN, warn),
            _ => at!(INFO, info),
        }
    }
}

/// An event's name, execution, task, node (hex) and other fields.
type Fields = (String, Option<u64>, Option<u64>, Option<String>, String);

fn fields(e: &Event) -> Option<Fields> {
    let serde_json::Value::Object(outer) = serde_json::to_value(e).ok()? else {
        return None;
    };
    let (name, serde_json::Value::Object(fields)) = outer.into_iter().next()? else {
        return None;
    };
    let execution = fields.get("execution").and_then(|v| v.as_u64());
    let task = fields.get("task").and_then(|v| v.as_u64());
    let node = fields.get("node").and_then(key_hex);
    Some((name, execution, task, node, rest(&fields)))
}
