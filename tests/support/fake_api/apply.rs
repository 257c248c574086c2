//! Server-side apply as the API server's structured-merge-diff does it, where the operator
//! depends on it: several managers share one object (every location its own entry of
//! `status.locations`, the aggregator the top level), so an apply must leave the fields of the
//! others alone and take back only what its own manager stops sending.
//!
//! - Ownership is recorded per object in `metadata.managedFields`: one entry per manager,
//!   operation `Apply` and subresource (`status` for `/status`), whose `fieldsV1` holds the
//!   fields it set in the API server's format (`f:<field>`, `k:<keys as JSON>` for an element
//!   of a list-map, `.` for the element itself, `{}` for a leaf).
//! - An apply sets the fields of its body and owns them afterwards: maps merge recursively (an
//!   empty map sets nothing), lists the schema declares `x-kubernetes-list-type: map` merge
//!   element by their `x-kubernetes-list-map-keys`, every other list (`set` lists too) is
//!   atomic: replaced whole.
//! - A field the manager owned before and no longer sends is removed, unless another manager
//!   owns it too; a list-map element goes once no manager owns anything in it (its key fields
//!   go with it).
//! - A field another manager owns with a different value than the body's is a conflict: 409
//!   with the API server's message, unless `force`, which moves the field to this manager. The
//!   same value is shared ownership, never a conflict.
//!
//! Writes other than apply (create, PUT, merge patch) record no ownership here: nothing the
//! operator does depends on the managers of such writes.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// A field path as `fieldsV1` spells it, one step per element.
type Path = Vec<String>;
/// The leaves of a `fieldsV1` tree.
type FieldSet = BTreeSet<Path>;

/// The schema lookups apply needs: which lists are list-maps, and by which keys. `None`
/// (a kind without a schema here): every list is atomic.
#[derive(Clone, Copy)]
pub struct Schema<'a>(pub Option<&'a Value>);

impl<'a> Schema<'a> {
    fn field(self, name: &str) -> Schema<'a> {
        Schema(self.0.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        }))
    }

    fn items(self) -> Schema<'a> {
        Schema(self.0.and_then(|s| s.get("items")))
    }

    fn map_keys(self) -> Option<Vec<String>> {
        let schema = self.0?;
        if schema.get("x-kubernetes-list-type")? != "map" {
            return None;
        }
        let keys = schema.get("x-kubernetes-list-map-keys")?.as_array()?;
        Some(
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
        )
    }
}

/// Who applies: the query's `fieldManager` and `force`, and where.
pub struct Applier<'a> {
    pub manager: &'a str,
    pub force: bool,
    /// `Some("status")` for an apply to `/status`.
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
    /// The time the entry records when the manager's fields or the object change.
    pub now: &'a str,
}

/// One entry of `metadata.managedFields`.
struct Entry {
    /// The entry as stored, without `fieldsV1`.
    head: Map<String, Value>,
    fields: FieldSet,
}

impl Entry {
    fn parse(entry: &Value) -> Option<Entry> {
        let mut head = entry.as_object()?.clone();
        let tree = head.remove("fieldsV1").unwrap_or_else(|| json!({}));
        let mut fields = FieldSet::new();
        leaves(&tree, &mut Vec::new(), &mut fields);
        Some(Entry { head, fields })
    }

    fn text(&self, field: &str) -> &str {
        self.head.get(field).and_then(Value::as_str).unwrap_or("")
    }

    fn is(&self, applier: &Applier) -> bool {
        self.text("manager") == applier.manager
            && self.text("operation") == "Apply"
            && self.text("subresource") == applier.subresource.unwrap_or("")
    }

    /// The manager as the API server's conflict message names it.
    fn describe(&self) -> String {
        let mut name = format!("{:?}", self.text("manager"));
        let subresource = self.text("subresource");
        if !subresource.is_empty() {
            name.push_str(&format!(" with subresource {subresource:?}"));
        }
        if self.text("operation") == "Update" {
            name.push_str(&format!(" using {}", self.text("apiVersion")));
        }
        name
    }

    fn to_value(&self) -> Value {
        let mut entry = self.head.clone();
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), tree(&self.fields));
        Value::Object(entry)
    }
}

/// Why an apply was refused: the API server's message.
#[derive(Debug)]
pub struct Conflicts(pub String);

/// `live` (the whole stored object; `{}` for one the apply creates) after `applier` applied
/// `applied` (the body's part in scope: `{"status": …}` on `/status`, else everything but the
/// status), with `metadata.managedFields` updated.
pub fn apply(
    live: &Value,
    applied: &Value,
    schema: Schema,
    applier: &Applier,
) -> Result<Value, Conflicts> {
    let mut entries: Vec<Entry> = live["metadata"]["managedFields"]
        .as_array()
        .map(|all| all.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default();
    let mut sent = FieldSet::new();
    collect(applied, schema, &mut Vec::new(), &mut sent);

    let mut conflicts = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.is(applier) {
            continue;
        }
        for path in entry.fields.intersection(&sent) {
            let is_element = path.last().is_some_and(|s| s == ".");
            if !is_element && value_at(live, path) != value_at(applied, path) {
                conflicts.push((index, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !applier.force {
        return Err(Conflicts(conflict_message(&entries, &conflicts)));
    }
    for (index, path) in &conflicts {
        entries[*index].fields.remove(path);
    }

    let own = entries.iter().position(|e| e.is(applier));
    let before = own.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let mut next = live.clone();
    merge(&mut next, applied, schema);
    let others: Vec<&FieldSet> = entries
        .iter()
        .filter(|e| !e.is(applier))
        .map(|e| &e.fields)
        .collect();
    for path in before.difference(&sent) {
        // What goes is the field, or for `.` the element; it stays while another manager, or
        // this apply, owns it or anything in it (structured-merge-diff adds those back).
        let subtree = match path.last().map(String::as_str) {
            Some(".") => &path[..path.len() - 1],
            _ => &path[..],
        };
        let still_owned = others
            .iter()
            .copied()
            .chain([&sent])
            .any(|o| o.iter().any(|p| p.starts_with(subtree)));
        if !still_owned && !is_key_field(path) {
            remove(&mut next, path);
        }
    }

    let changed = content(&next) != content(live) || before != sent;
    match own {
        Some(i) if sent.is_empty() => {
            entries.remove(i);
        }
        Some(i) => {
            entries[i].fields = sent;
            if changed {
                entries[i].head.insert("time".into(), json!(applier.now));
                entries[i]
                    .head
                    .insert("apiVersion".into(), json!(applier.api_version));
            }
        }
        None if sent.is_empty() => {}
        None => {
            let mut head = Map::new();
            head.insert("manager".into(), json!(applier.manager));
            head.insert("operation".into(), json!("Apply"));
            head.insert("apiVersion".into(), json!(applier.api_version));
            head.insert("time".into(), json!(applier.now));
            if let Some(subresource) = applier.subresource {
                head.insert("subresource".into(), json!(subresource));
            }
            entries.push(Entry { head, fields: sent });
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    if !next["metadata"].is_object() {
        next["metadata"] = json!({});
    }
    next["metadata"]["managedFields"] = Value::Array(entries.iter().map(Entry::to_value).collect());
    Ok(next)
}

/// The object without its managed fields, to tell whether an apply changed anything.
fn content(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    object
}

/// The fields `value` sets, as paths below `path`.
fn collect(value: &Value, schema: Schema, path: &mut Path, set: &mut FieldSet) {
    let Value::Object(fields) = value else {
        return;
    };
    for (name, child) in fields {
        if child.is_null() {
            continue;
        }
        let child_schema = schema.field(name);
        path.push(format!("f:{name}"));
        match (child, child_schema.map_keys()) {
            (Value::Array(items), Some(keys)) => {
                for item in items {
                    let Some(key) = element_key(item, &keys) else {
                        continue;
                    };
                    path.push(key);
                    path.push(".".into());
                    set.insert(path.clone());
                    path.pop();
                    collect(item, child_schema.items(), path, set);
                    path.pop();
                }
            }
            // An empty map sets nothing (`status: {}` takes back all the manager owned there).
            (Value::Object(_), _) => collect(child, child_schema, path, set),
            _ => {
                set.insert(path.clone());
            }
        }
        path.pop();
    }
}

/// `k:{"name":"office"}`: the step to the element of a list-map with these key values.
fn element_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut values = Map::new();
    for key in keys {
        values.insert(key.clone(), item.get(key)?.clone());
    }
    Some(format!("k:{}", Value::Object(values)))
}

/// Whether `item` is the element `k:` step `step` names.
fn is_element(item: &Value, step: &str) -> bool {
    let Some(keys) = step
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
    else {
        return false;
    };
    keys.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// A key field of a list-map element (`… k:{"name":"x"} f:name`): it goes with the element.
fn is_key_field(path: &[String]) -> bool {
    match path {
        [.., element, field] => {
            let (Some(keys), Some(field)) = (element.strip_prefix("k:"), field.strip_prefix("f:"))
            else {
                return false;
            };
            serde_json::from_str::<Map<String, Value>>(keys).is_ok_and(|k| k.contains_key(field))
        }
        _ => false,
    }
}

fn value_at<'v>(mut value: &'v Value, path: &[String]) -> Option<&'v Value> {
    for step in path {
        if let Some(field) = step.strip_prefix("f:") {
            value = value.get(field)?;
        } else if step.starts_with("k:") {
            value = value.as_array()?.iter().find(|e| is_element(e, step))?;
        }
    }
    Some(value)
}

/// Sets what `applied` sets on `target`.
fn merge(target: &mut Value, applied: &Value, schema: Schema) {
    let (Value::Object(target), Value::Object(applied)) = (&mut *target, applied) else {
        *target = applied.clone();
        return;
    };
    for (name, value) in applied {
        if value.is_null() {
            continue;
        }
        let child = schema.field(name);
        match (target.get_mut(name), value, child.map_keys()) {
            (Some(Value::Array(existing)), Value::Array(items), Some(keys)) => {
                for item in items {
                    let Some(key) = element_key(item, &keys) else {
                        continue;
                    };
                    match existing.iter_mut().find(|e| is_element(e, &key)) {
                        Some(element) => merge(element, item, child.items()),
                        None => existing.push(item.clone()),
                    }
                }
            }
            (Some(existing @ Value::Object(_)), Value::Object(_), _) => {
                merge(existing, value, child)
            }
            _ => {
                target.insert(name.clone(), value.clone());
            }
        }
    }
}

/// Removes the field (or, for a path ending in `.`, the list-map element) at `path`, and the
/// maps and lists that are left empty by it.
fn remove(value: &mut Value, path: &[String]) {
    match path {
        [] => {}
        [step, rest @ ..] if step.starts_with("f:") => {
            let name = &step[2..];
            let Some(fields) = value.as_object_mut() else {
                return;
            };
            if rest.is_empty() {
                fields.remove(name);
                return;
            }
            if let Some(child) = fields.get_mut(name) {
                remove(child, rest);
                let emptied = match child {
                    Value::Object(m) => m.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if emptied {
                    fields.remove(name);
                }
            }
        }
        [step, rest @ ..] if step.starts_with("k:") => {
            let Some(items) = value.as_array_mut() else {
                return;
            };
            let Some(index) = items.iter().position(|e| is_element(e, step)) else {
                return;
            };
            if rest == ["."] {
                items.remove(index);
            } else {
                remove(&mut items[index], rest);
            }
        }
        _ => {}
    }
}

/// The leaves of a `fieldsV1` tree below `path`.
fn leaves(tree: &Value, path: &mut Path, set: &mut FieldSet) {
    match tree.as_object() {
        Some(children) if !children.is_empty() => {
            for (step, child) in children {
                path.push(step.clone());
                leaves(child, path, set);
                path.pop();
            }
        }
        _ if !path.is_empty() => {
            set.insert(path.clone());
        }
        _ => {}
    }
}

/// The `fieldsV1` tree of `set`.
fn tree(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in set {
        let mut node = &mut root;
        for step in path {
            node = node
                .as_object_mut()
                .expect("tree nodes are objects")
                .entry(step.clone())
                .or_insert_with(|| json!({}));
        }
    }
    root
}

/// `.status.locations[name="office"].stale`: a path as the API server's messages print it.
fn display(path: &[String]) -> String {
    path.iter()
        .map(|step| {
            if let Some(field) = step.strip_prefix("f:") {
                format!(".{field}")
            } else if let Some(keys) = step.strip_prefix("k:") {
                let keys: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
                let keys: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", keys.join(","))
            } else {
                String::new()
            }
        })
        .collect()
}

/// The message of the API server's 409 for an apply without force (its `getConflictMessage`).
fn conflict_message(entries: &[Entry], conflicts: &[(usize, Path)]) -> String {
    if let [(index, path)] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            entries[*index].describe(),
            display(path)
        );
    }
    let mut managers: Vec<String> = conflicts
        .iter()
        .map(|(i, _)| entries[*i].describe())
        .collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for manager in &managers {
        lines.push(format!("conflicts with {manager}:"));
        for (index, path) in conflicts {
            if &entries[*index].describe() == manager {
                lines.push(format!("- {}", display(path)));
            }
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}
