//! Objects as text, the way `kubectl get` prints them: the kind's printer
//! columns (the same ones the REST Table carries), upper-case headers,
//! columns three spaces apart, `-o wide` columns only when asked, and a
//! NAMESPACE column first for a list across namespaces.

use serde_json::Value;

use super::columns::Column;

fn text(cell: &Value) -> String {
    match cell {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The table as lines of text (headers first); empty when `items` is.
pub fn table(columns: &[Column], items: &[Value], wide: bool, namespaces: bool) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<&Column> = columns.iter().filter(|c| wide || c.priority == 0).collect();
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(items.len() + 1);
    let mut header: Vec<String> = shown.iter().map(|c| c.name.to_uppercase()).collect();
    if namespaces {
        header.insert(0, "NAMESPACE".into());
    }
    rows.push(header);
    for item in items {
        let mut row: Vec<String> = shown.iter().map(|c| text(&(c.cell)(item))).collect();
        if namespaces {
            row.insert(0, text(&item["metadata"]["namespace"]));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::kinds::by_kind;

    #[test]
    fn deployments_print_like_kubectl() {
        let d = by_kind("apps", "Deployment").unwrap();
        let item = json!({"metadata": {"name": "web", "namespace": "prod"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let out = table(d.columns, std::slice::from_ref(&item), false, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME   READY   UP-TO-DATE   AVAILABLE   AGE");
        assert!(
            lines[1].starts_with("web    2/3     3            2           "),
            "{out}"
        );
        let wide = table(d.columns, &[item], true, true);
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR"
            ]
        );
        assert!(wide.contains("prod        web"), "{wide}");
        assert!(wide.contains("app=web"), "{wide}");
        assert_eq!(table(d.columns, &[], false, false), "");
    }
}
