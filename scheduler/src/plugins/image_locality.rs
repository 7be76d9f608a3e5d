//! ImageLocality: prefer nodes that already have the pod's images, weighted
//! by image size and by how widely the image is spread (so one node holding a
//! popular image does not attract every pod).

use crate::snapshot::{normalized_image_name, NodeInfo, Snapshot};

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The pod's images, normalized once per cycle.
pub fn pod_images(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| normalized_image_name(c.image.as_deref().unwrap_or("")))
        .collect()
}

pub fn score(images: &[String], snapshot: &Snapshot, node: &NodeInfo) -> i64 {
    if images.is_empty() {
        return 0;
    }
    let total = snapshot.len().max(1) as f64;
    let mut sum: i64 = 0;
    for img in images {
        if let Some(size) = node.images.get(img) {
            let spread = snapshot.image_num_nodes(img) as f64 / total;
            sum += (*size as f64 * spread) as i64;
        }
    }
    let max_threshold = MAX_CONTAINER_THRESHOLD * images.len() as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max_threshold);
    100 * (sum - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn nodes_with_big_images_win() {
        let s = snapshot(
            vec![
                node("big").image("app:1", 500 * MB).build(),
                node("small").image("docker.io/app:2", 30 * MB).build(),
                node("none").build(),
            ],
            vec![],
        );
        let images = pod_images(&pod("p").image("app:1").build());
        let big = score(&images, &s, s.node("big").unwrap());
        let none = score(&images, &s, s.node("none").unwrap());
        assert!(big > none, "{big} > {none}");
        assert_eq!(none, 0);
        // 500MB spread over 1 of 3 nodes: 166MB → (166-23)/(1000-23).
        assert_eq!(
            big,
            100 * ((500 * MB / 3) - MIN_THRESHOLD) / (1000 * MB - MIN_THRESHOLD)
        );
        // No tag means :latest.
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(
            normalized_image_name("reg:5000/nginx"),
            "reg:5000/nginx:latest"
        );
        assert_eq!(normalized_image_name("nginx:1.25"), "nginx:1.25");
    }
}
